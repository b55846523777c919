"""Reporting surfaces over the ledger: bills, projections, budget alerts and exports.

``service`` holds the logic, read by every surface: ``cli`` (``meter-gateway bill`` / ``export``),
``web`` (the projection and intervals API routes) and ``budget`` (the daemon's alert task). The
pure rules live in ``gateway.billing`` and ``gateway.export``; this package only fetches intervals
and configuration and hands them over.
"""

from __future__ import annotations
