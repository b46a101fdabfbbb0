"""Every request id the client can send gets an answer (data, an end message or an error), never silence."""
import asyncio
import struct

import pytest

from simulator.wire import FrameBuffer, frame

# msg id -> fields after the id, as ib_insync 0.9.86 sends them (reqId 5000 where there is one).
C12 = ['756733', 'SPY', 'STK', '', '0.0', '', '', 'SMART', 'ARCA', 'USD', 'SPY', 'SPY']
REQUESTS = {
    1: ['11', '5000', *C12, '0', '', '1', '0', ''],
    3: None,   # placeOrder: covered through the real client in test_orders.py
    5: ['1'], 6: ['2', '1', 'DU1234567'], 7: ['3', '5000', '0', '', '', '', '', '', ''],
    8: ['1', '1'], 9: ['8', '5000', *C12, '0', '', '', ''],
    10: ['5', '5000', *C12, '5', '0', ''], 16: ['1'], 17: ['1'], 18: ['1', '1'],
    19: ['1', '1', '<x/>', '5000'],
    20: ['5000', *C12, '0', '', '1 day', '5 D', '1', 'TRADES', '1', '0', ''],
    21: ['2', '5000', *C12, '1', '1', 'DU1234567', '0'],
    22: ['5000', '10', 'STK', 'STK.US', 'TOP_PERC_GAIN'] + [''] * 20,
    24: ['1'], 49: ['1'],
    50: ['3', '5000', *C12, '5', 'TRADES', '1', ''],
    52: ['2', '5000', '756733', 'SPY', 'STK', 'SMART', 'ARCA', 'USD', 'SPY', 'ReportSnapshot', ''],
    54: ['3', '5000', *C12, '1.0', '100.0', ''], 55: ['3', '5000', *C12, '0.2', '100.0', ''],
    61: ['1'], 62: ['1', '5000', 'All', 'NetLiquidation'],
    67: ['1', '5000'], 68: ['1', '5000', '1'], 69: ['1', '5000', ''],
    74: ['1', '5000', 'DU1234567', ''], 76: ['1', '5000', 'DU1234567', '', '0'],
    78: ['5000', 'SPY', '', 'STK', '756733'], 79: ['5000'], 80: [], 81: ['5000', 'SP'], 82: [],
    83: ['5000', 'a6'], 84: ['5000', 'BZ', 'BZ$1', ''], 85: [],
    86: ['5000', '756733', 'BZ', '', '', '10', ''], 87: ['5000', *C12, '0', '1', 'TRADES', '1'],
    88: ['5000', *C12, '0', '1', '3 days'], 92: ['5000', 'DU1234567', ''],
    94: ['5000', 'DU1234567', '', '756733'], 96: ['5000', *C12, '0', '', '', '10', 'TRADES', '1', '0', ''],
    97: ['5000', *C12, 'Last', '0', '0'], 99: ['0'], 100: ['5000'],
    102: ['5000', '', '', '', '', '', '', '10'], 104: ['5000'],
}
# Cancels of something that does not exist: the gateway answers with an error naming the id.
CANCELS = {2: ['2', '6001'], 4: ['1', '6002', ''], 11: ['1', '6003', '0'], 23: ['1', '6004'],
           25: ['1', '6005'], 51: ['1', '6006'], 53: ['1', '6007'], 56: ['1', '6008'], 57: ['1', '6009'],
           63: ['1', '6010'], 70: ['1', '6011'], 75: ['1', '6012'], 77: ['1', '6013'], 89: ['6014'],
           90: ['6015'], 93: ['6016'], 95: ['6017'], 98: ['6018'], 101: ['6019'], 103: ['6020']}
# Requests the real gateway never answers and the client never waits for
# (reqGlobalCancel answers with order status only when orders are open: see test_orders.py).
NO_ANSWER = {58: ['1'], 12: ['1', '1'], 13: ['1'], 14: ['1', '2'], 15: ['1', '1'], 59: ['1', '3'], 64: ['1'],
             65: ['1', 'x', '1'], 66: ['1', 'x'], 72: ['1', 'x', '1', 'k'], 73: ['1', 'x', 'y']}


async def open_session(host, port, client_id=70):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b'API\0' + struct.pack('>I', 9) + b'v157..176')
    buf = FrameBuffer()
    writer.write(frame([71, 2, client_id, '']))
    await read_until(reader, buf, lambda m: m[:4] == ['4', '2', '-1', '2158'])  # the last startup notice
    return reader, writer, buf


async def read_until(reader, buf, done, seconds=2.0):
    seen = []

    async def pump():
        while True:
            for m in buf.messages():
                seen.append(m)
                if done(m):
                    return
            data = await reader.read(65536)
            if not data:
                raise ConnectionError('gateway closed the connection')
            buf.feed(data)

    await asyncio.wait_for(pump(), seconds)
    return seen


def answers(sim, msg_id, fields):
    async def run():
        reader, writer, buf = await open_session(sim.host, sim.port)
        try:
            # A sentinel request after it: its answer comes back after any answer to the first.
            sentinel, reply = (17, '15') if msg_id == 49 else (49, '49')
            writer.write(frame([msg_id, *fields]))
            writer.write(frame([sentinel, 1]))
            replies = await read_until(reader, buf, lambda m: m[0] == reply)
            return replies[:-1]
        finally:
            writer.close()
    loop = asyncio.new_event_loop()   # not asyncio.run: it would unset the main thread's loop ib_insync uses
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


@pytest.mark.parametrize('msg_id', sorted(k for k, v in REQUESTS.items() if v is not None))
def test_request_gets_an_answer(sim, msg_id):
    replies = answers(sim, msg_id, REQUESTS[msg_id])
    assert replies, f'request {msg_id} got no answer'


@pytest.mark.parametrize('msg_id', sorted(CANCELS))
def test_cancel_of_unknown_id_gets_an_error(sim, msg_id):
    replies = answers(sim, msg_id, CANCELS[msg_id])
    assert any(m[0] == '4' for m in replies), replies


@pytest.mark.parametrize('msg_id', sorted(NO_ANSWER))
def test_fire_and_forget_requests_keep_the_connection_alive(sim, msg_id):
    answers(sim, msg_id, NO_ANSWER[msg_id])   # the sentinel still comes back
    assert sim.counters()[-1]['in'].get(msg_id) == 1


def test_unsupported_request_error_carries_its_req_id(sim):
    replies = answers(sim, 50, REQUESTS[50])
    assert replies == [['4', '2', '5000', '10300',
                        'The simulated gateway does not implement request 50', '']]
