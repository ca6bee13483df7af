//! End-to-end tests of UDP through SOCKS5 UDP ASSOCIATE (issue 12).

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::*;

const T: Duration = Duration::from_secs(60);

/// A UDP echo on 127.0.0.1 that records who sent each datagram.
fn echo() -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut b) {
            seen2.lock().unwrap().push(from);
            let _ = s.send_to(&b[..n], from);
        }
    });
    (addr, seen)
}

#[test]
fn python_udp_through_dante() {
    netns();
    let (addr, seen) = echo();
    let Some(dante) = Dante::start(DanteOpts::default()) else {
        return;
    };
    let l = Launch::chain(&[format!("socks5://127.0.0.1:{}", dante.port())]);
    let py = require("python3").unwrap();
    let script = format!(
        r#"
import socket
port = {port}
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
u.sendto(b'hello', ('127.0.0.1', port))
data, src = u.recvfrom(100)
print('unconnected', data, src)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
c.connect(('127.0.0.1', port))
c.send(b'world'); print('connected', c.recv(100), c.getpeername())
print('ok')
"#,
        port = addr.port()
    );
    let mut c = l.cmd(py);
    c.args(["-c", &script]);
    let o = run(&mut c, T);
    println!("{}\n{}\n{}", show(&o), l.log(), dante.log());
    assert!(stdout(&o).contains("ok"));
    println!("{:?}", seen.lock().unwrap());
}
