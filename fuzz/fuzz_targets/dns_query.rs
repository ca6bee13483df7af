//! `dns::decode` (a UDP datagram) and `dns::decode_tcp` (length-prefixed): decoder contract on
//! the TCP framing; a decoded query answers with a message whose question decodes back to the
//! same question, within the UDP limit; names and reverse names never panic.
#![no_main]

use chainsocks_core::dns::{self, DnsError, Rdata};
use chainsocks_core::proto::{Decoded, ProtoError};
use chainsocks_fuzz::check_decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_decoder(data, |d| Ok::<_, ProtoError>(dns::decode_tcp(d)));
    if let Decoded::Done(r, used) = dns::decode_tcp(data) {
        assert_eq!(Some(&r), data.get(2..used).map(dns::decode).as_ref());
    }
    match dns::decode(data) {
        Ok(q) => {
            let wire: usize = q.labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
            assert!(wire <= dns::MAX_NAME_WIRE && q.labels.iter().all(|l| (1..=63).contains(&l.len())));
            let mut answers = vec![
                Rdata::Addr("198.18.0.1".parse().unwrap()),
                Rdata::Addr("fd63:6873:6f63:6b73::1".parse().unwrap()),
            ];
            if let Some(name) = q.name() {
                let _ = dns::reverse_addr(&name);
                if !name.is_empty() {
                    let labels = dns::labels_of(&name).expect("a decoded name encodes");
                    assert_eq!(labels.len(), q.labels.len());
                }
                answers.push(Rdata::Name(name));
            }
            let a = dns::encode_answer(&q, dns::NOERROR, &answers, 60, dns::UDP_LIMIT);
            assert!(a.len() <= dns::UDP_LIMIT, "{} bytes", a.len());
            assert_eq!(a[..2], q.id.to_be_bytes());
            assert_eq!(a[2] & 0x80, 0x80);
            // The echoed question decodes back (as a query: QR cleared).
            let mut back = a.clone();
            back[2] &= 0x7f;
            let q2 = dns::decode(&back).expect("the echoed question decodes");
            assert_eq!((&q2.labels, q2.qtype, q2.qclass, q2.id), (&q.labels, q.qtype, q.qclass, q.id));
        }
        Err(DnsError::Reply { id, flags, rcode }) => {
            let e = dns::encode_error(id, flags, rcode);
            assert_eq!(e.len(), 12);
            assert_eq!(e[3] & 0x0f, rcode);
        }
        Err(DnsError::Drop) => {}
    }
});
