"""deform upload forms: one multi-file input, session-backed kept uploads, i18n."""
