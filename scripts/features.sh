# Sourced: the features every build of the tests and lints uses, so that the workspace's tests,
# the r2r tests (which add `reflex-cli/r2r`) and the firmware's board test share one build:
# the LeRobot export (parquet), the fleet (Zenoh), HTTPS to hosted VLMs (rustls), the native
# gamepad (gilrs, libudev) and burn's GPU backend (wgpu; its tests run on Mesa's lavapipe). The
# default build (`cargo build`) needs none of them.
REFLEX_FEATURES=reflex-cli/lerobot,reflex-cli/fleet,reflex-cli/tls,reflex-cli/gamepad,reflex-cli/gpu
