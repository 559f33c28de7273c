import pytest

from orderdesk.catalog.locators import parse_locator
from orderdesk.errors import InvalidInput


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("amazon:B08N5WRWNW", "amazon:B08N5WRWNW"),
        ("amazon:https://www.amazon.com/dp/B08N5WRWNW", "amazon:B08N5WRWNW"),
        (
            "amazon:https://www.amazon.com/Some-Title/dp/B08N5WRWNW/ref=sr_1_1?k=x",
            "amazon:B08N5WRWNW",
        ),
        ("amazon:https://amazon.co.uk/gp/product/B08N5WRWNW", "amazon:B08N5WRWNW"),
        ("amazon:https://www.amazon.de/dp/b08n5wrwnw", "amazon:B08N5WRWNW"),
        (
            "shopify:https://Shop.MyShopify.com/products/Linen-Throw:39990001112223",
            "shopify:https://shop.myshopify.com/products/linen-throw:39990001112223",
        ),
        (
            "shopify:https://shop.example.com/products/mug/?variant=1:42",
            "shopify:https://shop.example.com/products/mug:42",
        ),
    ],
)
def test_locator_normalised(raw: str, expected: str) -> None:
    assert parse_locator(raw).key == expected


@pytest.mark.parametrize(
    "raw",
    [
        "amazon:B08N5WRWN",  # nine characters
        "amazon:b08n5wrwnw",  # lower-case bare ASIN
        "amazon:B08N5WRWNW1",
        "amazon:https://www.example.com/dp/B08N5WRWNW",
        "amazon:https://www.amazon.com/s?k=bottle",
        "amazon:",
        "shopify:https://shop.example.com/products/mug",
        "shopify:https://shop.example.com/products/mug:abc",
        "shopify:https://shop.example.com/collections/all:42",
        "shopify:not-a-url:42",
        "ebay:12345",
        "",
        "amazon:" + "A" * 700,
    ],
)
def test_locator_invalid(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_locator(raw)
    assert caught.value.code == "invalid_product_locator"


@pytest.mark.parametrize(
    "raw",
    [
        "polygon:0x1234567890abcdef1234567890abcdef12345678:1",
        "ethereum:0x1234567890abcdef1234567890abcdef12345678",
        "crossmint:7d4b6a1e-1234-4c8e-9d3e-1234567890ab",
        "crossmint:7d4b6a1e-1234-4c8e-9d3e-1234567890ab:12",
    ],
)
def test_token_locator_not_supported(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_locator(raw)
    assert caught.value.code == "unsupported_product_locator"
    assert "not supported" in caught.value.message
