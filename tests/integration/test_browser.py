#!/usr/bin/env python3
"""What a browser does with batond's streams, with a real one: headless
Chromium's EventSource (tests/harness/browser.py), on a page of batond's
own origin. An EventSource gives up for good when a stream request gets
any status but 200 (WHATWG HTML, "fail the connection") and retries only
after a network error or the end of a 200 response: a stream batond cannot
start must come back as an ended 200, never a 503 or no answer at all.

And on pages of other origins (CORS_ORIGINS), with batond behind nginx:
a listed origin subscribes and publishes with credentials and gets what
it published; any other cannot read a thing."""

import json
import time

from tests.harness import http_get, publish, run, test, wait_until
from tests.integration import test_auth as auth

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


# A page on another origin than the API's: it subscribes with credentials
# (the cookie baton_token, a JWT: an EventSource cannot set headers),
# publishes once with fetch (JSON, so
# the browser sends a preflight first) when its stream opens, or when the
# browser gave the stream up, and then a simple request (text/plain, no
# preflight) that batond answers 415. What it sees goes into
# window.report, the latest in the title.
CROSS_ORIGIN_PAGE = '''<!doctype html>
<meta charset="utf-8">
<title>loading</title>
<script>
const api = '%(api)s/api/v1/topics/%(topic)s';
const report = window.report = [];
function say(kind, detail) {
  report.push(Object.assign({kind}, detail || {}));
  document.title = kind;
}
document.cookie = 'baton_token=%(token)s; path=/';
let publishing = false;
async function publishOnce() {
  if (publishing)
    return;
  publishing = true;
  try {
    const r = await fetch(api + '/events', {
      method: 'POST', credentials: 'include', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({from: location.origin})});
    say('published', {status: r.status, body: await r.json(), requestId: r.headers.get('X-Request-ID'),
                      retryAfter: r.headers.get('Retry-After')});
  } catch (e) {
    say('publish_failed', {error: String(e)});
  }
  try {
    const r = await fetch(api + '/events', {method: 'POST', body: '{}', credentials: 'include',
                                            headers: {'Content-Type': 'text/plain'}});
    say('simple_post', {status: r.status, body: await r.json()});
  } catch (e) {
    say('simple_post_failed', {error: String(e)});
  }
}
const source = new EventSource(api + '/stream?lastEventId=0', {withCredentials: true});
source.onopen = () => { say('open'); publishOnce(); };
source.onmessage = e => say('message', {id: e.lastEventId, data: JSON.parse(e.data)});
source.onerror = () => {
  say('error', {state: source.readyState});
  if (source.readyState === EventSource.CLOSED)
    publishOnce();
};
</script>
'''


def report(page):
    return json.loads(page.evaluate('JSON.stringify(window.report)'))


def of_kind(page, kind):
    return [e for e in report(page) if e['kind'] == kind]


@test
def a_page_on_a_listed_origin_subscribes_and_publishes_through_nginx(ctx):
    """The page comes from nginx on one port, the API from nginx on another
    (another origin) in front of batond, whose CORS_ORIGINS lists the
    first. Chromium sends a preflight for the JSON publish, the stream and
    the publish carry the page's cookie, the page reads the 201 (and the
    exposed X-Request-ID) and receives its own event on its EventSource.
    The same page from a third port, not listed, reads nothing: its stream
    is given up, its publish never sent (the preflight gets 405), and not
    even the answer to a simple request is readable."""
    browser = ctx.browser()
    pg = ctx.postgres()
    # With JWT on, the page's only credential is the cookie: a token
    # minted here (Python's hmac), granting the topic.
    b = ctx.batond({'DATABASE_URL': pg.url(), 'STREAM_HEARTBEAT_INTERVAL': '1s', 'JWT_KEY': auth.KEY})
    token = auth.hs256(auth.grant(publish=['cross'], subscribe=['cross']))
    static = 'root WWW; location / { }'
    proxy = (f'location / {{ proxy_pass http://127.0.0.1:{b.port}; proxy_http_version 1.1; '
             'proxy_set_header Connection ""; proxy_buffering off; proxy_read_timeout 1h; }')
    ng = ctx.nginx({'app': static, 'other': static, 'api': proxy})
    app, other = ng.url('app').rstrip('/'), ng.url('other').rstrip('/')
    b.env['CORS_ORIGINS'] = app
    b.start()
    b.wait_ready()
    ng.write('page.html', CROSS_ORIGIN_PAGE % {'api': ng.url('api').rstrip('/'), 'topic': 'cross', 'token': token})

    page = browser.open(f'{app}/page.html')
    wait_until(lambda: of_kind(page, 'message') and of_kind(page, 'simple_post'), 20,
               what='the page to receive what it published')
    published = of_kind(page, 'published')
    assert len(published) == 1 and published[0]['status'] == 201, report(page)
    event_id = published[0]['body']['id']
    assert published[0]['requestId'], published      # Access-Control-Expose-Headers
    assert published[0]['retryAfter'] is None, published
    messages = of_kind(page, 'message')
    assert [(m['id'], m['data']['data']) for m in messages] == [(str(event_id), {'from': app})], messages
    # Even an error is readable by a listed origin.
    simple = of_kind(page, 'simple_post')[0]
    assert simple['status'] == 415 and simple['body']['error'] == 'unsupported_media_type', simple
    assert not of_kind(page, 'error') and not of_kind(page, 'publish_failed'), report(page)

    # nginx logs a request when it ends: the stream's, once the page closes it.
    page.evaluate('source.close(); true')
    api = wait_until(lambda: (lambda log: any(e['method'] == 'GET' for e in log) and log)(
        ng.access_log('api')), 10, what="nginx to log the page's stream")
    preflight = [e for e in api if e['method'] == 'OPTIONS']
    assert [(e['uri'], e['status'], e['origin']) for e in preflight] == [
        ('/api/v1/topics/cross/events', 204, app)], api
    # The browser sent credentials: the stream and the publish carry the cookie.
    for method, path in (('GET', '/api/v1/topics/cross/stream'), ('POST', '/api/v1/topics/cross/events')):
        sent = [e for e in api if (e['method'], e['uri']) == (method, path) and e['origin'] == app]
        assert sent and f'baton_token={token}' in sent[0]['cookie'], (method, api)

    # The same page on an origin not listed.
    stranger = browser.open(f'{other}/page.html')
    wait_until(lambda: of_kind(stranger, 'publish_failed') and of_kind(stranger, 'simple_post_failed'), 20,
               what='the unlisted page to fail')
    seen = report(stranger)
    assert not of_kind(stranger, 'open') and not of_kind(stranger, 'message'), seen
    assert of_kind(stranger, 'error')[-1]['state'] == 2, seen         # given up, CLOSED
    assert 'TypeError' in of_kind(stranger, 'publish_failed')[0]['error'], seen
    assert 'TypeError' in of_kind(stranger, 'simple_post_failed')[0]['error'], seen
    # batond answered, without CORS headers: the browser kept it from the page.
    from_other = wait_until(lambda: (lambda log: ('GET', '/api/v1/topics/cross/stream', 200) in log and log)(
        [(e['method'], e['uri'], e['status']) for e in ng.access_log('api') if e['origin'] == other]), 10,
        what="nginx to log the unlisted page's stream")
    assert ('OPTIONS', '/api/v1/topics/cross/events', 405) in from_other, from_other
    assert ('POST', '/api/v1/topics/cross/events', 415) in from_other, from_other
    assert ('POST', '/api/v1/topics/cross/events', 201) not in from_other, from_other
    # Without the cookie, batond itself refuses (JWT on): 401.
    assert http_get(b.port, '/api/v1/topics/cross/events').status == 401
    stored = http_get(b.port, '/api/v1/topics/cross/events', headers={'Authorization': f'Bearer {token}'}).json()['events']
    assert [e['data'] for e in stored] == [{'from': app}], stored
    print(f'# Chromium: {app} subscribed and published through nginx (preflight 204, event {event_id} '
          f'back on its EventSource, cookie sent); {other} read nothing (stream closed, preflight 405, '
          f'"{of_kind(stranger, "publish_failed")[0]["error"]}")', flush=True)


if __name__ == '__main__':
    run()
