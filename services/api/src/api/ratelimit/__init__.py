"""Rate limiting for the api, in three parts a reader can find apart:

- `policies` — which policies apply where: `default` per client IP on every route but
  `/health` and `/metrics` (a probe must never be throttled into a restart), `auth` per
  client IP on top of it for the routes that create accounts or sign in, `user` per
  signed-in user (applied by the auth dependency, once it knows the user);
- `guard` — one check: the shared limiter (one Lua call) behind a circuit breaker; while
  Redis cannot answer, an in-process limiter with the same policies, or a 503 for the
  policies in RATE_LIMIT_FAIL_CLOSED (default `auth`);
- `middleware` — pure ASGI: the checks before the app, the headers on the way out
  (`shared.limiter.http`), and the one refusal shape for 429 and 503.
"""
