"""Names shared across stages, each defined once."""

QEMU_BINARY = "qemu-system-x86_64"
# What guest_images/init prints on the serial console once its sshd is up.
READY_MARKER = "balloon-testbed: guest ready"
# Per repetition in a bundle: one row per selftest case a kselftest step ran (results/README.md).
SELFTEST_FILE = "kselftest.json"
