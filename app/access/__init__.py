"""Who may read or manage a bin: tokens, view links, share links, operators, the cookie."""
