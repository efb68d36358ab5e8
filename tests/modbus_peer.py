"""pymodbus server used as an independent Modbus peer by tests/modbus_pymodbus.rs.

Usage: modbus_peer.py tcp PORT | rtu-over-tcp PORT | rtu TTY BAUD

Prints `READY` once serving, then one line per request it receives:
`REQ <unit> <fc> <address> <count> [values...]` (values only for writes).
Unit 1: every data type, contiguous. Unit 2: an SDM-style input map with unmapped gaps
(reads across a gap get an illegal-address exception). Other units do not exist and
get no answer, like an absent slave on RS-485.
"""

import asyncio
import sys

from pymodbus.constants import ExcCodes  # noqa: F401  (documents the exception source)
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def unit1():
    hr = [
        SimData(0, values=-12345, datatype=DataType.INT16),
        SimData(1, values=54321, datatype=DataType.UINT16),
        SimData(2, values=-123456789, datatype=DataType.INT32),
        SimData(4, values=3000000000, datatype=DataType.UINT32),
        SimData(6, values=-1234567890123456789, datatype=DataType.INT64),
        SimData(10, values=12345678901234567890, datatype=DataType.UINT64),
        SimData(14, values=-3.25, datatype=DataType.FLOAT32),
        SimData(16, values=6.02214076e23, datatype=DataType.FLOAT64),
        SimData(20, values="EDGEBUS!", datatype=DataType.STRING),
        SimData(24, count=16, values=0, datatype=DataType.REGISTERS),
    ]
    co = [SimData(0, values=[True, False, True, True, False, False, False, True], datatype=DataType.BITS)]
    di = [SimData(0, values=[False, True], datatype=DataType.BITS)]
    ir = [SimData(0, values=[0xBEEF], datatype=DataType.REGISTERS)]
    return SimDevice(id=1, simdata=(co, di, hr, ir))


def unit2():
    # Eastron SDM120 style: f32 every 6 registers, the 4 between unmapped.
    ir = [
        SimData(0, values=230.5, datatype=DataType.FLOAT32),
        SimData(6, values=5.25, datatype=DataType.FLOAT32),
        SimData(12, values=1210.0625, datatype=DataType.FLOAT32),
    ]
    empty = [SimData(0, values=[0], datatype=DataType.REGISTERS)]
    bits = [SimData(0, values=[False], datatype=DataType.BITS)]
    return SimDevice(id=2, simdata=(bits, bits, empty, ir))


def trace(sending, pdu):
    if not sending:
        vals = []
        for name in ("registers", "bits"):
            v = getattr(pdu, name, None)
            if v and pdu.function_code in (5, 6, 15, 16):
                vals = [str(int(x)) for x in v]
        print("REQ", pdu.dev_id, pdu.function_code, pdu.address, pdu.count, *vals, flush=True)
    return pdu


KNOWN = (1, 2)


def mute_unknown(unit_at):
    """pymodbus 3.16 answers unknown ids of a SimDevice list with an exception even with
    ignore_missing_devices; drop those answers so an absent slave is silent."""

    def trace_packet(sending, data):
        if sending and len(data) > unit_at and data[unit_at] not in KNOWN:
            return b""
        return data

    return trace_packet


async def main():
    devices = [unit1(), unit2()]
    if sys.argv[1] in ("tcp", "rtu-over-tcp"):
        rtu = sys.argv[1] == "rtu-over-tcp"
        server = ModbusTcpServer(
            devices,
            framer=FramerType.RTU if rtu else FramerType.SOCKET,
            address=("127.0.0.1", int(sys.argv[2])),
            ignore_missing_devices=True,
            trace_pdu=trace,
            trace_packet=mute_unknown(0 if rtu else 6),
        )
    else:
        server = ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            port=sys.argv[2],
            baudrate=int(sys.argv[3]),
            ignore_missing_devices=True,
            trace_pdu=trace,
            trace_packet=mute_unknown(0),
        )
    task = asyncio.create_task(server.serve_forever())
    for _ in range(100):
        await asyncio.sleep(0.05)
        if getattr(server, "active_connections", None) is not None or server.transport is not None:
            break
    print("READY", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
