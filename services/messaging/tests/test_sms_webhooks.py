"""Twilio webhook rules: signatures, status callbacks, inbound keywords."""

from __future__ import annotations

import secrets

import pytest

from careloop_messaging.api.webhooks import ACCEPT_WORDS
from careloop_messaging.channels.sms import (
    InvalidWebhook,
    Keyword,
    MessageStatus,
    classify_choice,
    classify_keyword,
    compute_signature,
    parse_inbound_message,
    parse_status_callback,
    verify_signature,
)

pytestmark = pytest.mark.unit

# Twilio's published example (webhook security docs and its helper libraries' tests).
EXAMPLE_TOKEN = "12345"
EXAMPLE_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
EXAMPLE_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
EXAMPLE_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


class TestSignature:
    def test_twilios_published_example(self) -> None:
        assert compute_signature(EXAMPLE_TOKEN, EXAMPLE_URL, EXAMPLE_PARAMS) == EXAMPLE_SIGNATURE
        assert verify_signature(EXAMPLE_TOKEN, EXAMPLE_URL, EXAMPLE_PARAMS, EXAMPLE_SIGNATURE)

    def test_parameter_order_does_not_matter(self) -> None:
        shuffled = list(reversed(list(EXAMPLE_PARAMS.items())))
        assert verify_signature(EXAMPLE_TOKEN, EXAMPLE_URL, shuffled, EXAMPLE_SIGNATURE)

    def test_repeated_parameters_sort_by_value_and_count_once(self) -> None:
        # The repeated-parameter vector used by Twilio's helper libraries' tests.
        params = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]
        assert compute_signature(EXAMPLE_TOKEN, EXAMPLE_URL, params) == (
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        )

    @pytest.mark.parametrize(
        ("token", "url", "params"),
        [
            ("54321", EXAMPLE_URL, EXAMPLE_PARAMS),
            (EXAMPLE_TOKEN, EXAMPLE_URL + "&baz=3", EXAMPLE_PARAMS),
            (EXAMPLE_TOKEN, EXAMPLE_URL.replace("https", "http"), EXAMPLE_PARAMS),
            (EXAMPLE_TOKEN, EXAMPLE_URL, {**EXAMPLE_PARAMS, "Digits": "9999"}),
            (EXAMPLE_TOKEN, EXAMPLE_URL, {**EXAMPLE_PARAMS, "Extra": "1"}),
            (EXAMPLE_TOKEN, EXAMPLE_URL, {k: v for k, v in EXAMPLE_PARAMS.items() if k != "To"}),
        ],
    )
    def test_any_tampering_fails(self, token: str, url: str, params: dict[str, str]) -> None:
        assert not verify_signature(token, url, params, EXAMPLE_SIGNATURE)

    @pytest.mark.parametrize(
        "signature", [None, "", "RSOYDt4T1cUTdK1PDd93/VVr8B8", "x" * 28, "invalid 王"]
    )
    def test_missing_or_malformed_signatures_fail(self, signature: str | None) -> None:
        assert not verify_signature(EXAMPLE_TOKEN, EXAMPLE_URL, EXAMPLE_PARAMS, signature)

    def test_self_consistent_with_a_random_token(self) -> None:
        token = secrets.token_hex(16)
        url = "https://messaging.example.test/twilio/status?tenant=t1"
        form = {"MessageSid": "SM" + secrets.token_hex(16), "MessageStatus": "delivered"}
        assert verify_signature(token, url, form, compute_signature(token, url, form))


class TestStatusCallback:
    def test_delivered(self) -> None:
        callback = parse_status_callback({"MessageSid": "SMabc", "MessageStatus": "delivered"})
        assert callback.message_sid == "SMabc"
        assert callback.status is MessageStatus.DELIVERED
        assert callback.status.final
        assert callback.error_code is None

    def test_undelivered_with_an_error_code(self) -> None:
        callback = parse_status_callback(
            {"MessageSid": "SMabc", "MessageStatus": "undelivered", "ErrorCode": "30003"}
        )
        assert callback.status is MessageStatus.UNDELIVERED
        assert callback.error_code == 30003

    @pytest.mark.parametrize("status", ["queued", "sent", "delivered", "undelivered", "failed"])
    def test_the_statuses_we_act_on(self, status: str) -> None:
        parsed = parse_status_callback({"MessageSid": "SMx", "MessageStatus": status})
        assert parsed.status == status
        assert parsed.status.final == (status in {"delivered", "undelivered", "failed"})

    @pytest.mark.parametrize(
        "form",
        [
            {"MessageStatus": "sent"},
            {"MessageSid": "SMx"},
            {"MessageSid": "SMx", "MessageStatus": "lost"},
        ],
    )
    def test_incomplete_or_unknown_is_refused(self, form: dict[str, str]) -> None:
        with pytest.raises(InvalidWebhook):
            parse_status_callback(form)


class TestInbound:
    @pytest.mark.parametrize(
        ("body", "keyword"),
        [
            ("STOP", Keyword.OPT_OUT),
            ("stop", Keyword.OPT_OUT),
            ("  Stop \n", Keyword.OPT_OUT),
            ("STOPALL", Keyword.OPT_OUT),
            ("unsubscribe", Keyword.OPT_OUT),
            ("Cancel", Keyword.OPT_OUT),
            ("END", Keyword.OPT_OUT),
            ("quit", Keyword.OPT_OUT),
            ("START", Keyword.OPT_IN),
            ("yes", Keyword.OPT_IN),
            ("Unstop", Keyword.OPT_IN),
            ("HELP", Keyword.HELP),
            ("info", Keyword.HELP),
            ("C", Keyword.CONFIRM),
            (" c ", Keyword.CONFIRM),
            ("Confirm", Keyword.CONFIRM),
            ("R", Keyword.RESCHEDULE),
            ("reschedule", Keyword.RESCHEDULE),
            ("please don't cancel", None),
            ("C R", None),
            ("", None),
            ("Thanks!", None),
        ],
    )
    def test_keyword_table(self, body: str, keyword: Keyword | None) -> None:
        assert classify_keyword(body) == keyword

    def test_parse_inbound_message(self) -> None:
        message = parse_inbound_message(
            {"MessageSid": "SMin", "From": "+15550100", "To": "+15550199", "Body": " stop "}
        )
        assert (message.from_, message.to, message.keyword) == (
            "+15550100",
            "+15550199",
            Keyword.OPT_OUT,
        )

    @pytest.mark.parametrize(
        ("body", "choice"),
        [
            ("1", 1),
            (" 2 \n", 2),
            ("9", 9),
            ("0", None),
            ("12", None),
            ("2 please", None),
            ("#2", None),
            ("\u00b2", None),
            ("\u0662", None),
            ("", None),
        ],
    )
    def test_only_a_single_digit_is_a_choice(self, body: str, choice: int | None) -> None:
        assert classify_choice(body) == choice
        assert (
            parse_inbound_message(
                {"MessageSid": "SMin", "From": "+15550100", "To": "+15550199", "Body": body}
            ).choice
            == choice
        )

    def test_inbound_without_sender_is_refused(self) -> None:
        with pytest.raises(InvalidWebhook, match="From"):
            parse_inbound_message({"MessageSid": "SMin", "To": "+15550199", "Body": "C"})


class TestWaitlistAcceptWords:
    """`Y` / `YES` take a waitlist offer; the webhook decides by the latest message
    (`test_waitlist_messages.py`), so YES stays Twilio's opt-in keyword here."""

    @pytest.mark.parametrize(
        ("body", "accepts"),
        [
            ("Y", True),
            (" y ", True),
            ("yes", True),
            ("YES\n", True),
            ("yes please", False),
            ("Yeah", False),
            ("N", False),
            ("", False),
        ],
    )
    def test_only_a_whole_y_or_yes_accepts(self, body: str, accepts: bool) -> None:
        assert (body.strip().upper() in ACCEPT_WORDS) is accepts

    def test_yes_keeps_its_opt_in_keyword(self) -> None:
        assert classify_keyword("YES") is Keyword.OPT_IN
        assert classify_keyword("Y") is None
