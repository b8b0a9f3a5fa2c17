"""The dashboard's pages, one module per area: lists, one event, sign-in, approvals, tokens, forwards; each a
few small handlers over `PageKit` (render, flash, a checked form action) and the presenter."""
