"""Run history: every training run of this server, kept across restarts; compare curves, reload a checkpoint."""
from explorer.views.history import page

page()
