"""Pretrain: a tiny GPT from scratch on a corpus, trained in a background job with a live loss curve."""
from explorer.views.pretrain import page

page()
