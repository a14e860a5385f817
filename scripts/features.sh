# Sourced: the features every build of the tests and lints uses, so that the workspace's tests,
# the r2r tests (which add `reflex-cli/r2r`) and the firmware's board test share one build:
# the LeRobot export (parquet), the fleet (Zenoh), HTTPS to hosted VLMs (rustls) and the native
# gamepad (gilrs, libudev). The default build (`cargo build`) needs none of them.
REFLEX_FEATURES=reflex-cli/lerobot,reflex-cli/fleet,reflex-cli/tls,reflex-cli/gamepad
# The main lints also check burn's GPU backend (`gpu`: wgpu), its code and its tests. Its tests
# run in scripts/test-gpu.sh, not in CI: building wgpu into the test build (and again into the
# r2r stage's) took CI's test build from about 24 to 37 minutes here.
REFLEX_LINT_FEATURES=$REFLEX_FEATURES,reflex-cli/gpu
