"""One view module per page (named like the page): widgets -> one gpt_core call -> render."""
