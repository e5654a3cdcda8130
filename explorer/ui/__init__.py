"""The UI kit every page shares: i18n, persisted widget state, sidebar, model store, text input, token chips, messages."""
