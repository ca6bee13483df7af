//! `sys::read_sockaddr` on arbitrary bytes and lengths: never reads past `len` (the buffer is
//! exactly `len` bytes long, so a sanitizer run catches an over-read), accepts exactly the
//! lengths the kernel accepts (AF_INET ≥ 16, AF_INET6 ≥ 24), and reads the port and address
//! from where the kernel does. Also `sys::datagram_to` (the kernel's reading of a datagram's
//! name, with its AF_UNSPEC cases) for both socket families: never panics, and a destination
//! it finds is the one `read_sockaddr` finds for the same bytes as AF_INET / AF_INET6.
#![no_main]

use chainsocks_core::sys::{DgramTo, datagram_to, read_sockaddr};
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
    for domain in [libc::AF_INET, libc::AF_INET6] {
        if let DgramTo::To(d) = datagram_to(domain, Some(&copy)) {
            let mut as_family = copy.clone();
            let f = if d.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u16;
            as_family[..2].copy_from_slice(&f.to_ne_bytes());
            // SAFETY: as above.
            let same = unsafe { read_sockaddr(as_family.as_ptr().cast(), len as libc::socklen_t) };
            assert_eq!(same, Some(d));
            assert!(family == Some(f as i32) || family == Some(libc::AF_UNSPEC));
        }
    }
});
