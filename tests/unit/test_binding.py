"""`binding.check_archive`: an archive is accepted only at the key an agent writes for this
namespace's checkpoint (`Destination.key_for`), in whichever location holds it."""

from __future__ import annotations

import pytest

from ckpt.apis.storagelocation import Destination, LocationType
from ckpt.operator.binding import Claim, NotBound, check_archive

ID = "9e8d7c6b-5a49-3827-1605-f4e3d2c1b0a9"
S3 = Destination(location="shared", type=LocationType.s3, bucket="ckpt", prefix="team/ckpts")
FILE = Destination(location="local", type=LocationType.file, prefix="fast")


def _claim(url: str) -> Claim:
    return Claim(namespace="apps", name="db-ckpt", uid="u", pod="db", checkpoint_id=ID,
                 restore_path=url)


@pytest.mark.parametrize(
    ("url", "location", "key"),
    [
        (f"s3://ckpt/team/ckpts/apps/{ID}.tar.zst", S3, f"team/ckpts/apps/{ID}.tar.zst"),
        (f"s3://ckpt/team/ckpts/apps/{ID}.tar.zst.age", S3,
         f"team/ckpts/apps/{ID}.tar.zst.age"),
        (f"file:///var/lib/ckpt/archives/fast/apps/{ID}.tar.zst", FILE,
         f"fast/apps/{ID}.tar.zst"),
        (f"file:///var/lib/ckpt/archives/apps/{ID}.tar", None, f"apps/{ID}.tar"),
    ],
)
def test_the_namespaces_key_of_the_record_is_accepted(
    url: str, location: Destination | None, key: str
) -> None:
    # Each as `Destination.key_for` makes it.
    dest = location or Destination(location="node-local", type=LocationType.file)
    assert key in {dest.key_for("apps", ID), dest.key_for("apps", ID, "none"),
                   dest.model_copy(update={"recipients": ["age1" + "q" * 58]}).key_for("apps", ID)}
    assert check_archive(_claim(url), location) == key


@pytest.mark.parametrize(
    ("url", "location"),
    [
        # Another namespace's folder, and this namespace's folder under another one's.
        (f"s3://ckpt/team/ckpts/victims/{ID}.tar.zst", S3),
        (f"s3://ckpt/team/ckpts/victims/apps/{ID}.tar.zst", S3),
        # Outside the location's prefix, or in another bucket.
        (f"s3://ckpt/apps/{ID}.tar.zst", S3),
        (f"s3://other/team/ckpts/apps/{ID}.tar.zst", S3),
        # Another record's archive, or not an archive.
        ("s3://ckpt/team/ckpts/apps/1d2c3b4a-5f6e-4d7c-8b9a-0a1b2c3d4e5f.tar.zst", S3),
        (f"s3://ckpt/team/ckpts/apps/{ID}.json", S3),
        # Climbing out, and tricks of URL syntax.
        (f"file:///var/lib/ckpt/archives/victims/../apps/{ID}.tar.zst", None),
        (f"file:///var/lib/ckpt/archives/fast/victims/../apps/{ID}.tar.zst", FILE),
        (f"file:///var/lib/ckpt/archives//apps/{ID}.tar.zst", None),
        (f"file:///var/lib/ckpt/archives/apps/{ID}.tar.zst?x=1", None),
        (f"file://node-2/var/lib/ckpt/archives/apps/{ID}.tar.zst", None),
        (f"file:///var/lib/ckpt/archives/a%2Fb/apps/{ID}.tar.zst", None),
        # A node-local URL for an S3 location and the other way round.
        (f"file:///var/lib/ckpt/archives/team/ckpts/apps/{ID}.tar.zst", S3),
        (f"s3://ckpt/fast/apps/{ID}.tar.zst", FILE),
        # A file location's prefix is part of the key.
        (f"file:///var/lib/ckpt/archives/apps/{ID}.tar.zst", FILE),
    ],
)
def test_anything_else_is_refused(url: str, location: Destination | None) -> None:
    with pytest.raises(NotBound) as refused:
        check_archive(_claim(url), location)
    assert refused.value.reason == "ArchiveOutsideNamespace"
    assert "not under namespace apps's prefix" in refused.value.message
