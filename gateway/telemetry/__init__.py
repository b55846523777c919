"""MQTT telemetry: live values and closed intervals out to a broker, with Home Assistant discovery.

Topics (``<prefix>`` is ``[telemetry] topic_prefix``, by default ``meter-gateway/<gateway_id>``):

* ``<prefix>/status`` — ``online`` / ``offline``, retained; ``offline`` is also the connection's last will,
  so a box that dies or loses its network turns its sensors unavailable.
* ``<prefix>/<meter>/availability`` — ``online`` / ``offline`` as the meter answers or not, retained.
* ``<prefix>/<meter>/<quantity>`` — the latest value of each polled quantity as a plain number in its
  profile unit (W, V, A, Hz, Wh), retained (``retain``) with the configured QoS.
* ``<prefix>/<meter>/interval`` — every closed 15-minute interval of the meter's **import** channel as
  JSON (meter, channel, seq, start, end, wh, quality, kind, corrects, register_end_wh, hash), QoS ≥ 1, not
  retained. The topic and its messages are what they were before meters had channels (plus the
  ``channel`` field), so existing subscribers see no export energy.
* ``<prefix>/<meter>/interval/export`` — the same for the meter's **export** channel (feed-in), where the
  meter has one (a profile with ``energy_export``, an MQTT mapping with ``export_path``, a Tasmota device
  sending ``ENERGY.ExportActive``). Each channel has its own sequence, so ``(meter, channel, seq)``
  identifies a message: QoS 1 is at-least-once, and a receiver may see one again after the box lost a
  broker's acknowledgement. ``<prefix>/<meter>/interval/#`` subscribes to every channel of a meter.
* Live registers are quantities like any other: ``<prefix>/<meter>/energy_import`` and
  ``<prefix>/<meter>/energy_export`` (Wh), each with its own discovery sensor.
* ``<discovery_prefix>/sensor/<gateway>/<meter>_<quantity>/config`` — Home Assistant MQTT discovery,
  retained: one HA device per meter, one sensor per quantity (device_class, state_class, unit).

What it promises: publishing never slows acquisition (a poll only appends to a bounded queue, O(1);
when it is full the oldest live value is dropped and counted — after a reconnect the newest value of every
quantity is published again anyway, so the retained state is right); closed intervals are read from the
ledger in order behind a cursor kept in the ledger, so an outage of the broker delays them and loses
none, also across restarts of the gateway; every failure is counted, logged once per streak, shown as an
alarm and in ``/api/v1/sync``.
"""

from __future__ import annotations
