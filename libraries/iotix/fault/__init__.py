"""Network faults in user space: latency, jitter, loss, bandwidth, partitions and outages, no root needed.

One engine (:mod:`iotix.fault.pipe`, owned per target by :class:`iotix.fault.faultset.FaultSet`) and two ways
into the data path: a wrapper on the sockets the transports own (MQTT, CoAP) and an asyncio proxy in front of
an address (HTTP and Kafka, whose sockets belong to aiohttp and kafka-python, and standalone proxies).
See ``docs/network-faults.md``.
"""
