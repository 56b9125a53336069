"""Rate limiting core: `RateLimiter.check(policy, identifier, cost)` in one Redis call.

See `shared.limiter.core` for the algorithms and their accuracy, and
`shared.limiter.denials` for the in-process denial cache and the bound it implies.
"""

from shared.limiter.core import RateLimiter, script_source
from shared.limiter.denials import DenialCache
from shared.limiter.model import Decision, Policy

__all__ = ["Decision", "DenialCache", "Policy", "RateLimiter", "script_source"]
