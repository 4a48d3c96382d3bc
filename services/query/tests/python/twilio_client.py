"""The official Twilio helper library for Python against the receipts REST facade.

Run by tests/it/python_client.rs with: BASE_URL ACCOUNT_SID AUTH_TOKEN CONVERSATION MESSAGE
MANY_RECEIPTS_MESSAGE SERVICE. Prints one `ok …` line per check and exits non-zero on the first
failure. Only the base URL changes: every request the library builds for
https://conversations.twilio.com goes to the facade instead, and paging follows the facade's own
next_page_url exactly as the library always does.
"""

import sys

from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

TWILIO_BASE = "https://conversations.twilio.com"


class FacadeHttpClient(TwilioHttpClient):
    """Twilio's own HTTP client, with Twilio's host swapped for the facade's base URL."""

    def __init__(self, base_url):
        super().__init__()
        self.base_url = base_url.rstrip("/")

    def request(self, method, url, *args, **kwargs):
        if url.startswith(TWILIO_BASE):
            url = self.base_url + url[len(TWILIO_BASE):]
        return super().request(method, url, *args, **kwargs)


def check(condition, what):
    if not condition:
        print(f"FAILED {what}", flush=True)
        sys.exit(1)
    print(f"ok {what}", flush=True)


def main():
    base_url, account, token, conversation, message, many, service = sys.argv[1:8]
    client = Client(account, token, http_client=FacadeHttpClient(base_url))
    conversations = client.conversations.v1

    # A message's delivery summary.
    fetched = conversations.conversations(conversation).messages(message).fetch()
    delivery = fetched.delivery
    check(fetched.sid == message and fetched.account_sid == account, "message fetched")
    check(
        delivery == {"total": 6, "sent": "some", "delivered": "some", "read": "some",
                     "failed": "none", "undelivered": "none"},
        f"message delivery {delivery}",
    )
    check(fetched.body is None and fetched.author is None, "content is null")

    # Receipts, every page through the library's own paging.
    receipts = conversations.conversations(conversation).messages(many).delivery_receipts
    listed = receipts.list(page_size=2)
    sids = [r.sid for r in listed]
    check(len(sids) == 7 and len(set(sids)) == 7, f"listed {len(sids)} receipts over pages of 2")
    page = receipts.page(page_size=3)
    pages = 1
    seen = [r.sid for r in page]
    while page.next_page_url:
        page = page.next_page()
        pages += 1
        seen.extend(r.sid for r in page)
    check(pages == 3 and seen == sids, f"paged by hand: {pages} pages, same receipts in the same order")

    # One receipt.
    one = receipts(sids[0]).fetch()
    check(one.sid == sids[0] and one.message_sid == many, "receipt fetched")
    check(one.status == "sent" and one.error_code == 0, f"receipt status {one.status} error_code {one.error_code}")
    check(len(one.channel_message_sid) == 34, f"channel_message_sid {one.channel_message_sid}")

    # Errors arrive as the library's exception with Twilio's code.
    try:
        conversations.conversations(conversation).messages("IM" + "9" * 32).fetch()
        check(False, "an unknown message is an error")
    except TwilioRestException as e:
        check(e.status == 404 and e.code == 20404, f"unknown message: {e.status} {e.code}")

    # The account's webhook configuration: read, update, read back.
    webhooks = conversations.configuration.webhooks()
    before = webhooks.fetch()
    check(before.account_sid == account and before.post_webhook_url is None, "configuration read")
    updated = webhooks.update(
        post_webhook_url="https://hooks.example.com/receipts",
        method="POST",
        filters=["onDeliveryUpdated", "onMessageAdded"],
        target="webhook",
    )
    check(
        updated.post_webhook_url == "https://hooks.example.com/receipts"
        and updated.filters == ["onDeliveryUpdated", "onMessageAdded"]
        and updated.method == "POST",
        f"configuration updated: {updated.filters}",
    )
    after = webhooks.fetch()
    check(after.post_webhook_url == updated.post_webhook_url and after.filters == updated.filters,
          "configuration read back")

    # A chat service's configuration.
    service_hooks = conversations.services(service).configuration.webhooks()
    written = service_hooks.update(post_webhook_url="https://hooks.example.com/service",
                                   filters=["onDeliveryUpdated"], method="GET")
    check(written.chat_service_sid == service and written.method == "GET", "service configuration updated")
    check(service_hooks.fetch().filters == ["onDeliveryUpdated"], "service configuration read back")

    # A conversation-scoped webhook: create, list, delete.
    scoped = conversations.conversations(conversation).webhooks
    created = scoped.create(target="webhook", configuration_url="https://hooks.example.com/scoped",
                            configuration_method="post", configuration_filters=["onDeliveryUpdated"])
    check(created.sid.startswith("WH") and created.configuration["url"] == "https://hooks.example.com/scoped",
          "scoped webhook created")
    check([w.sid for w in scoped.list()] == [created.sid], "scoped webhook listed")
    check(scoped(created.sid).delete() is True, "scoped webhook deleted")
    check(scoped.list() == [], "no scoped webhook left")
    print("python client: all checks passed", flush=True)


if __name__ == "__main__":
    main()
