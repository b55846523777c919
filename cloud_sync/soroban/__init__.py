"""Delivery records to the seed-001 contract over Soroban RPC, exactly once (issue 9, item 4).

:mod:`.errors` names the contract's errors; :mod:`.invocation` builds and signs the
``deliver_energy`` envelope (stellar-sdk); :mod:`.uplink` is the daemon task. Imported only
with ``[soroban]`` configured: stellar-sdk's XDR stack costs ~40 MiB of a box's memory.
"""
