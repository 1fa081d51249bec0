"""graphprior."""
