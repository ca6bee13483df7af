//! `sys::read_sockaddr` on arbitrary bytes and lengths: never reads past `len` (the buffer is
//! exactly `len` bytes long, so a sanitizer run catches an over-read), accepts exactly the
//! lengths the kernel accepts (AF_INET ≥ 16, AF_INET6 ≥ 24), and reads the port and address
//! from where the kernel does.
#![no_main]

use chainsocks_core::sys::read_sockaddr;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let len = data.len();
    let copy: Vec<u8> = data.to_vec();
    // SAFETY: `copy` holds exactly `len` readable bytes.
    let got = unsafe { read_sockaddr(copy.as_ptr().cast(), len as libc::socklen_t) };
    let family = (len >= 2).then(|| u16::from_ne_bytes([data[0], data[1]]) as i32);
    match got {
        None => assert!(
            !matches!(family, Some(libc::AF_INET) if len >= 16)
                && !matches!(family, Some(libc::AF_INET6) if len >= 24),
            "refused a complete address"
        ),
        Some(SocketAddr::V4(a)) => {
            assert_eq!(family, Some(libc::AF_INET));
            assert!(len >= 16);
            assert_eq!(a.port(), u16::from_be_bytes([data[2], data[3]]));
            assert_eq!(a.ip().octets(), [data[4], data[5], data[6], data[7]]);
        }
        Some(SocketAddr::V6(a)) => {
            assert_eq!(family, Some(libc::AF_INET6));
            assert!(len >= 24);
            assert_eq!(a.port(), u16::from_be_bytes([data[2], data[3]]));
            assert_eq!(&a.ip().octets()[..], &data[8..24]);
            if len < 28 {
                assert_eq!(a.scope_id(), 0);
            }
        }
    }
});
