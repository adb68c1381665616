"""Which S3 keys can be mirrored to disk, and where each one goes.

Pure functions only: no filesystem access here. The I/O layer still resolves
every final path and checks it lies under the model directory, because a
symlink already on disk can redirect a path that is safe on paper.
"""

from __future__ import annotations

import unicodedata

# The folder under model_dir where icanhazmodel keeps its own records. A key
# that maps onto it would let a bucket overwrite those records.
META_DIRNAME = ".icanhazmodel"

# Most filesystems cap one path component at 255 bytes (NAME_MAX).
_NAME_MAX = 255
# icanhazmodel's temp files: '.<name>.<hex>' + this, beside their target.
PARTIAL_SUFFIX = ".icanhazmodel-partial"


class RefusedKey(ValueError):
    """A key that cannot be mirrored safely and faithfully; str() says why."""


def _bad_character(segment: str) -> str | None:
    for char in segment:
        if char == "\\":
            return "contains a backslash"
        # Cc covers NUL, C0 controls, DEL and C1 controls: names with these
        # break terminals and scripts, and NUL cannot be in a path at all.
        category = unicodedata.category(char)
        if category == "Cc":
            return f"contains the control character {char!r}"
        # Cf: bidi overrides (U+202E shows 'exe.txt' for 'txt.exe'), zero-width
        # characters (two names that look the same), the BOM; macOS ignores
        # some of them when comparing names.
        if category == "Cf":
            return f"contains the invisible formatting character U+{ord(char):04X}"
    return None


def _check_segment(segment: str) -> None:
    if segment == "":
        raise RefusedKey("has an empty path segment ('//', or a leading '/')")
    if segment in (".", ".."):
        raise RefusedKey(f"has a '{segment}' path segment")
    reason = _bad_character(segment)
    if reason:
        raise RefusedKey(reason)
    if len(segment.encode("utf-8", "surrogatepass")) > _NAME_MAX:
        raise RefusedKey(f"has a path segment longer than {_NAME_MAX} bytes")


def key_parts(key: str, *, is_dir_marker: bool = False) -> tuple[str, ...]:
    """Split *key* into the path segments it is mirrored to under model_dir.

    A directory marker (a zero-byte key ending in '/') maps to the directory
    it names. Raises :class:`RefusedKey` for keys that would escape the model
    directory or could not be written under their own name.
    """
    if key == "":
        raise RefusedKey("is empty")
    if key.startswith("/"):
        raise RefusedKey("is absolute (starts with '/')")
    if key.endswith("/") and not is_dir_marker:
        raise RefusedKey("ends with '/' but is not an empty folder marker")
    body = key[:-1] if is_dir_marker and key.endswith("/") else key
    parts = tuple(body.split("/"))
    if body.isascii() and body.isprintable() and "\\" not in body:
        # Printable ASCII holds no control or formatting character, and is
        # a byte a character: the per-character checks have nothing to find
        # (most keys; a million-key listing checks each one).
        for segment in parts:
            if segment in ("", ".", "..") or len(segment) > _NAME_MAX:
                _check_segment(segment)  # says which
    else:
        for segment in parts:
            _check_segment(segment)
    # casefold: on a case-insensitive filesystem '.ICANHAZMODEL' is the same folder.
    if parts[0].casefold() == META_DIRNAME:
        raise RefusedKey(f"maps onto {META_DIRNAME}/, where icanhazmodel keeps its records")
    if not is_dir_marker and is_temp_name(parts[-1]):
        # Landed, it would be swept away as a stale temp file by the next run
        # that writes in its folder, and fetched again, every time.
        raise RefusedKey(f"is named like icanhazmodel's temp files ('.*{PARTIAL_SUFFIX}')")
    return parts


def is_temp_name(name: str) -> bool:
    """Whether *name* (one path component) is a temp file name icanhazmodel writes."""
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX) and "/" not in name


def is_dir_marker(key: str, size: int) -> bool:
    """True for the zero-byte 'folder' objects that S3 consoles create."""
    return size == 0 and key.endswith("/")


def directory_prefix(model_key: str) -> str:
    """The listing prefix for *model_key* taken as a directory.

    Always ends in '/', so 'version_1.2' never matches 'version_1.20/...' or
    'version_1.2.txt'. An empty key means the whole bucket.
    """
    if model_key == "" or model_key.endswith("/"):
        return model_key
    return model_key + "/"
