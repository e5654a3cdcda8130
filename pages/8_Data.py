"""Data pipeline: documents -> EOT or padding rows, sliding windows, batches, Alpaca collate."""
from explorer.views.data import page

page()
