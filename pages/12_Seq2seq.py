"""Seq2seq: BARThez (or a tiny random MBart) encoding once and decoding step by step, then a classifier on its encoder."""
from explorer.views.seq2seq import page

page()
