"""The source root is named platform/; the stdlib module of that name must still be the real one."""

import platform
import sysconfig
from pathlib import Path


def test_stdlib_platform_not_shadowed():
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(platform.__file__).resolve().parent == stdlib
    assert platform.system()  # the real module answers, e.g. "Linux"


def test_meddiff_imports_from_platform_source_root():
    import meddiff

    assert Path(meddiff.__file__).resolve().parent.parent.name == "platform"
    assert not (Path(meddiff.__file__).resolve().parent.parent / "__init__.py").exists()
