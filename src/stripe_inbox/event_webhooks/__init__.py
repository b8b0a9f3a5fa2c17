"""MCP Events webhook subscriptions (#25, DESIGN §9): the callbacks' secrets kept encrypted, the callback policy,
verification and Standard Webhooks signing, the subscriptions' rules, and the delivery loop the runtime runs."""
