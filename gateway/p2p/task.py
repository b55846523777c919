"""The daemon's planner task: makes the delivery records that are due, after every commit of credits.

No stellar-sdk here: records are made (and signed by the gateway key) whether or not
``[soroban]`` is configured; the Soroban uplink sends them when it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import structlog

from cloud_sync.keys import Keypair
from gateway.clock import Clock
from gateway.config.p2p import AgreementConfig, P2PConfig
from gateway.p2p.planner import Terms
from gateway.p2p.store import Agreement, LedgerFile, P2PStore

log = structlog.get_logger("gateway.p2p")

NAME = "p2p"


def agreements_of(configs: Sequence[AgreementConfig]) -> list[Agreement]:
    """The configured agreements the box delivers for (Active ones only)."""
    return [Agreement(Terms(a.id, a.kwh, a.start_s, a.deadline_s), a.provider_meter, a.provider)
            for a in configs if a.status == "Active"]


class DeliveryPlanner:
    def __init__(self, cfg: P2PConfig, db: LedgerFile, clock: Clock, keypair: Keypair, *, gateway_id: str,
                 wakeup: Callable[[], asyncio.Event] | None = None) -> None:
        self.cfg = cfg
        self.store = P2PStore(db)
        self._clock = clock
        self._keypair = keypair
        self._gateway_id = gateway_id
        self._wakeup = wakeup
        self._agreements = agreements_of(cfg.agreements)
        self.made = asyncio.Event()
        """Set (and replaced) whenever records were made: the Soroban uplink waits on it."""

    async def step(self) -> int:
        made = await self.store.decide(self._agreements, gateway=self._gateway_id, keypair=self._keypair,
                                       now=self._clock.now())
        for r in made:
            log.info("p2p_delivery_decided", agreement=r.body["agreement_id"], kwh=r.body["energy_delivered_kwh"],
                     reason=r.body["reason"], carry_out_wh=r.body["carry_out_wh"], meter=r.body["provider_meter"])
        if made:
            self.made.set()
            self.made = asyncio.Event()
        return len(made)

    async def run(self) -> None:
        while True:
            event = self._wakeup() if self._wakeup else None
            await self.step()
            if event is None:
                await self._clock.sleep(self.cfg.check_every_s)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._clock.host_seconds(self.cfg.check_every_s) + 0.001):
                    await event.wait()
