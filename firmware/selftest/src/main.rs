//! The control core's checks on a Cortex-M4F: QEMU's MPS2-AN386 runs this image with
//! semihosting (`cargo run --release --target thumbv7em-none-eabihf -p reflex-fw-selftest`
//! in `firmware/`). Prints one line per check; exits 0 when all pass, 1 otherwise.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use reflex_fw_core::checks::ALL;

#[entry]
fn main() -> ! {
    let mut failed = 0;
    for (name, check) in ALL {
        match check() {
            Ok(()) => hprintln!("ok   {}", name),
            Err(f) => {
                failed += 1;
                hprintln!("FAIL {}: {}", name, f.0);
            }
        }
    }
    hprintln!(
        "{} of {} checks passed on the Cortex-M4F",
        ALL.len() - failed,
        ALL.len()
    );
    debug::exit(if failed == 0 {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
