"""The one exception billing code raises on purpose.

Billing is pure arithmetic on data someone else collected, so every failure here means the *input* is
wrong (usage outside the period, a TOU tariff given only a total, a naive timestamp). It subclasses
``ValueError`` as well as ``GatewayError`` so that generic callers which already treat bad values as
``ValueError`` keep working, while daemon code can catch it by the gateway's own tree.
Tariff *configuration* errors are reported by pydantic's ``ValidationError`` instead, because that is
what the config loader already translates into ``ConfigError`` with field paths.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class BillingError(GatewayError, ValueError):
    """Usage, period or as-of data cannot be billed or projected as given."""
