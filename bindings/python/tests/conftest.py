"""The package tests' fixtures live in conftest_shared.py, which the Beam tests share."""

from conftest_shared import bin_dir, emulator, fake_cloud_kms, keyring, kms, project  # noqa: F401
