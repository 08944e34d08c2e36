"""The hardened parser refuses what it must and keeps what it must."""

import pytest

from gateway.errors import ParseError, PayloadTooLargeError
from gateway.xml import ParserLimits, parse_json, parse_xml, soap_payload

SOAP = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">%s</s:Envelope>'


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', "xml.forbidden-construct"),
        (b'<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>', "xml.forbidden-construct"),
        (b"<a><?php echo 1 ?></a>", "xml.forbidden-construct"),
        (b"<a><b></a>", "xml.malformed"),
        (b"<a>\xff\xfe</a>", "xml.malformed"),
        (b"<a>" * 60 + b"</a>" * 60, "xml.too-deep"),
    ],
)
def test_hostile_xml_is_refused_with_its_code(body: bytes, code: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_xml(body)
    assert caught.value.code == code


def test_malformed_xml_names_the_line() -> None:
    with pytest.raises(ParseError) as caught:
        parse_xml(b"<a>\n<b>\n</a>")
    assert caught.value.line == 3


def test_xml_declaration_and_comments_are_accepted() -> None:
    root = parse_xml(b'<?xml version="1.0" encoding="UTF-8"?><!-- note --><a><b>x</b></a>')
    assert root.findtext("b") == "x"


def test_size_limit_applies_before_parsing() -> None:
    with pytest.raises(PayloadTooLargeError):
        parse_xml(b"<a>" + b"x" * 100 + b"</a>", ParserLimits(max_bytes=50))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"a": 1, "a": 2}', "json.duplicate-key"),
        (b'{"a": NaN}', "json.malformed"),
        (b'{"a": Infinity}', "json.malformed"),
        (b"[" * 200000 + b"]" * 200000, "json.too-deep"),
        (b'{"a": "\xff"}', "json.malformed"),
        (b'{"a": 1', "json.malformed"),
        (b'{"a": ' + b"9" * 5000 + b"}", "json.malformed"),
    ],
)
def test_hostile_json_is_refused_with_its_code(body: bytes, code: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_json(body)
    assert caught.value.code == code


def test_json_nested_duplicate_is_found() -> None:
    with pytest.raises(ParseError, match="'x'"):
        parse_json(b'{"a": {"x": 1, "y": 2, "x": 3}}')


def test_soap_envelope_with_two_bodies_is_refused() -> None:
    body = SOAP % b"<s:Body><a/></s:Body><s:Body><b/></s:Body>"
    with pytest.raises(ParseError) as caught:
        soap_payload(parse_xml(body))
    assert caught.value.code == "soap.malformed"


def test_soap_payload_is_the_single_body_child() -> None:
    payload, header = soap_payload(
        parse_xml(SOAP % b"<s:Header/><s:Body><p:x xmlns:p='u'/></s:Body>")
    )
    assert payload.tag == "{u}x"
    assert header is not None


def test_not_a_soap_envelope() -> None:
    with pytest.raises(ParseError) as caught:
        soap_payload(parse_xml(b"<Envelope/>"))
    assert caught.value.code == "soap.malformed"


def test_every_error_code_is_documented() -> None:
    from pathlib import Path

    from gateway.errors import PROBLEMS

    documented = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text()
    for code, problem in PROBLEMS.items():
        assert f"| `{code}` | {problem.status} |" in documented, code


def test_utf16_cannot_smuggle_a_dtd_past_the_byte_checks() -> None:
    body = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;<?pi?></a>'
    with pytest.raises(ParseError) as caught:
        parse_xml(body.encode("utf-16"))
    assert caught.value.code in ("xml.encoding", "xml.forbidden-construct")
    with pytest.raises(ParseError) as caught:
        parse_xml('<?xml version="1.0" encoding="UTF-16"?><a/>'.encode("utf-16"))
    assert caught.value.code == "xml.encoding"


@pytest.mark.parametrize(
    "body",
    [
        # An external parameter entity on /dev/zero would hang a parser that read the DTD.
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY % p SYSTEM '
        '"file:///dev/zero"> %p;]><x/>'.encode("utf-16"),
        '<!DOCTYPE x [<!ENTITY c "47">]><x a="&c;"/>'.encode("utf-16"),
        '<!DOCTYPE x [<!ENTITY c "47">]><x a="&c;"/>'.encode("utf-16-le"),
        "<!DOCTYPE x><x/>".encode("utf-32"),
        b'<?xml version="1.0" encoding="UTF-7"?>+ADw-!DOCTYPE x+AD4-<x/>',
    ],
    ids=["utf16-declared", "utf16-bom", "utf16le-bare", "utf32", "utf7"],
)
def test_no_encoding_carries_a_dtd_past_the_checks(body: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_xml(body)
    assert caught.value.code in ("xml.encoding", "xml.malformed", "xml.forbidden-construct")


def test_json_numbers_keep_every_digit_and_strings_every_character() -> None:
    from decimal import Decimal

    value = parse_json(b'{"a": 5400.0000000000000001, "b": "x\\r\\ny"}')
    assert value["a"] == Decimal("5400.0000000000000001")
    assert parse_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # a byte order mark is tolerated


def test_lone_surrogates_are_refused() -> None:
    for body in (b'{"a": "x\\ud800"}', b'{"\\udfff": 1}'):
        with pytest.raises(ParseError) as caught:
            parse_json(body)
        assert caught.value.code == "json.malformed"
    assert parse_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # a valid pair


def test_soap_header_that_must_be_understood_is_refused() -> None:
    body = SOAP % (
        b"<s:Header><x:Sec xmlns:x='u' s:mustUnderstand='1'/></s:Header><s:Body><p/></s:Body>"
    )
    with pytest.raises(ParseError) as caught:
        soap_payload(parse_xml(body))
    assert caught.value.code == "soap.must-understand"
    optional = SOAP % b"<s:Header><x:Note xmlns:x='u'/></s:Header><s:Body><p/></s:Body>"
    assert soap_payload(parse_xml(optional))[0].tag == "p"


def test_soap_body_with_text_beside_its_element_is_refused() -> None:
    with pytest.raises(ParseError) as caught:
        soap_payload(parse_xml(SOAP % b"<s:Body>JUNK<p/></s:Body>"))
    assert caught.value.code == "soap.malformed"
