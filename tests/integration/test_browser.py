#!/usr/bin/env python3
"""What a browser does with batond's streams, with a real one: headless
Chromium's EventSource (tests/harness/browser.py), on a page of batond's
own origin. An EventSource gives up for good when a stream request gets
any status but 200 (WHATWG HTML, "fail the connection") and retries only
after a network error or the end of a 200 response: a stream batond cannot
start must come back as an ended 200, never a 503 or no answer at all."""

import json
import time

from tests.harness import publish, run, test, wait_until

# The page's side: every event, error and open in window.seen. From id 0:
# a page that subscribes before its first event must not miss the events
# published before its stream could start (its EventSource sends
# Last-Event-ID itself once it has had one).
WATCH = '''
window.seen = [];
window.source = new EventSource('/api/v1/topics/%s/stream?lastEventId=%d');
source.onopen = () => seen.push({kind: 'open'});
source.onerror = () => seen.push({kind: 'error', state: source.readyState});
source.onmessage = e => seen.push({kind: 'message', id: e.lastEventId, data: JSON.parse(e.data)});
source.addEventListener('unavailable', e => seen.push({kind: 'unavailable', data: JSON.parse(e.data)}));
true
'''


def seen(page):
    return page.evaluate('JSON.stringify(seen)') and json.loads(page.evaluate('JSON.stringify(seen)'))


def kinds(page, kind):
    return [e for e in seen(page) if e['kind'] == kind]


@test
def an_event_source_comes_back_by_itself_after_the_database_does(ctx):
    """A page opens its EventSource while batond cannot serve streams: first
    not ready (PostgreSQL down at start), later with PostgreSQL killed. Each
    time the browser is told "unavailable", keeps retrying (readyState never
    CLOSED) and, once PostgreSQL is back, gets the events published."""
    pg = ctx.postgres()
    pg.stop()
    b = ctx.batond({'DATABASE_URL': pg.url(), 'STREAM_RETRY_HINT': '300ms',
                    'STREAM_HEARTBEAT_INTERVAL': '1s'}).start()
    b.notify.wait_for(r'STATUS=Starting: waiting for PostgreSQL', 10)
    browser = ctx.browser()
    page = browser.open(f'http://127.0.0.1:{b.port}/_/health/live')

    page.evaluate(WATCH % ('web', 0))
    # Each try waits for readiness 5 s (HTTP_HOLD_UNTIL_READY_USEC) first.
    wait_until(lambda: len(kinds(page, 'unavailable')) >= 2, 20, what='the browser to retry')
    not_ready = kinds(page, 'unavailable')[0]['data']
    assert not_ready['error'] == 'not_ready', not_ready
    assert page.evaluate('source.readyState') != 2, 'the EventSource gave up'
    pg.start()
    b.wait_ready(20)
    wait_until(lambda: publish(b.port, 'web', {'n': 1}).status == 201, 20, interval=0.2,
               what='publishing to work')
    wait_until(lambda: [e['data']['data'] for e in kinds(page, 'message')] == [{'n': 1}], 15,
               what='the page to get the event')
    retries = len(kinds(page, 'unavailable'))

    # A page that opens while PostgreSQL is down, on a topic nobody here
    # follows yet (one that is followed starts at once, and its replay
    # waits for the database with the stream open).
    page.evaluate('source.close(); true')
    pg.kill()
    t_down = time.monotonic()
    page.evaluate(WATCH % ('web-outage', 0))
    wait_until(lambda: len(kinds(page, 'unavailable')) >= 2, 15, what='unavailable while the database is down')
    first = time.monotonic() - t_down
    down = kinds(page, 'unavailable')[0]['data']
    assert down['error'] == 'unavailable', down
    assert page.evaluate('source.readyState') != 2, 'the EventSource gave up'
    pg.start()
    wait_until(lambda: publish(b.port, 'web-outage', {'n': 2}).status == 201, 20, interval=0.2,
               what='publishing to work again')
    wait_until(lambda: [e['data']['data'] for e in kinds(page, 'message')] == [{'n': 2}], 15,
               what='the page to get the event after the outage')
    assert not [e for e in seen(page) if e['kind'] == 'error' and e['state'] == 2], seen(page)
    print(f'# Chromium: {retries} "unavailable" retries while not ready, then the event; '
          f'with PostgreSQL down the first "unavailable" came {first:.1f} s after opening '
          f'({down["message"]}); the page resumed by itself both times', flush=True)


if __name__ == '__main__':
    run()
