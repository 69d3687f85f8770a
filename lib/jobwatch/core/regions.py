"""The one rule for a region name, wherever it comes from (a queue message, an API Gateway request, a CI callback,
a direct invocation, a CLI option, the configuration).

A region becomes part of a host name (``<bucket>.ci.<region>.myqcloud.com``) and of every store key, so its
*shape* is checked before anything else: 2-8 lower-case ASCII letters, then one to three parts of 2-20 lower-case
ASCII letters or digits, each after a single hyphen (``ap-guangzhou``, ``ap-shanghai-fsi``, ``na-siliconvalley``),
at most :data:`MAX_REGION_LENGTH` characters in all. Anything else (empty, upper case, dots, slashes, spaces,
underscores, other scripts, too long) is refused with a :class:`~jobwatch.core.errors.ValidationError` naming the
field and the value.

Whether a *well-formed* region is one where Cloud Infinite runs is a different question, and this code does not
refuse on it. :data:`~jobwatch.core.models.CI_REGIONS` was built from the regions of COS (Cloud Infinite serves
COS buckets); Cloud Infinite's own "Regions and Domains" page exists (Product Introduction > Regions and Domains,
https://www.tencentcloud.com/document/product/1045 ; the API pages, e.g. 1045/72916, refer to it as "Region and
Domain Name") but its list could not be read and confirmed (searched 2026-11-30: the document corpus, the
doc-source repository ``tencentyun/qcloud-documents``, the shared reference notes), and Tencent opens regions
over time. Refusing a real region missing from our list would drop real jobs, so a well-formed region outside the
list is accepted; :func:`unknown_region_note` gives the words for a warning (with a "did you mean" for a near
miss such as ``ap-guangzou``) that the callers log as ``region_unknown`` (the function) or print (the CLI).

Pure: no I/O; the callers decide how to say it.
"""

from __future__ import annotations

from typing import Any

from jobwatch.core.errors import ValidationError, closest
from jobwatch.core.models import CI_REGIONS, validate_region

# The longest region known is 16 characters (na-siliconvalley). A store's region column holds 32 (MySQL
# VARCHAR(32): a longer one would fail, or be cut, in the middle of a batch's transaction); a DNS label 63.
MAX_REGION_LENGTH = 32
EXPECTED = ("expected a region such as ap-guangzhou: 2-8 lower-case letters, then 1-3 parts of 2-20 lower-case "
            f"letters or digits each after a '-', at most {MAX_REGION_LENGTH} characters in all")


def check_region(value: Any, field: str = "region") -> str:
    """``value`` when it is a well-formed region name, else :class:`ValidationError` naming ``field`` and the
    value. A well-formed region outside the known list is returned too (see :func:`unknown_region_note`)."""
    try:
        validate_region(value)
    except ValidationError:
        raise ValidationError(field, value, EXPECTED) from None
    if len(value) > MAX_REGION_LENGTH:
        raise ValidationError(field, value, EXPECTED)
    return value


def is_known_region(region: str) -> bool:
    return region in CI_REGIONS


def unknown_region_note(region: str) -> str | None:
    """None for a region in the known list; else what to warn: that it is not among the regions this version
    knows, the nearest known one when it looks like a typo, and that it is used anyway."""
    if is_known_region(region):
        return None
    close = closest(region, CI_REGIONS)
    hint = f"did you mean {close}? " if close else ""
    return (f"{region!r} is not among the {len(CI_REGIONS)} Cloud Infinite regions this version knows; {hint}"
            "used as given (a region Tencent opened since is fine)")


__all__ = ["MAX_REGION_LENGTH", "check_region", "is_known_region", "unknown_region_note"]
