//! The real libc functions behind every symbol we export, found with `dlsym(RTLD_NEXT, …)`.
//!
//! Owns: one atomic slot per function, filled by the library constructor and re-resolved
//! lock-free if a hook runs before it (another library's constructor may call connect).
//! Must never: call a hooked symbol through `libc::` (that would re-enter our own hook).

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{
    addrinfo, c_char, c_int, c_uchar, c_uint, c_void, hostent, mmsghdr, msghdr, size_t, sockaddr,
    socklen_t, ssize_t,
};

fn resolve(slot: &AtomicUsize, sym: &CStr) -> usize {
    let p = slot.load(Ordering::Acquire);
    if p != 0 {
        return p;
    }
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds the next definition after ours.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, sym.as_ptr()) } as usize;
    slot.store(p, Ordering::Release);
    p
}

macro_rules! real_fns {
    ($($name:ident / $tyname:ident: $ty:ty = $sym:literal;)*) => {
        $(
            pub type $tyname = $ty;

            /// The real function; `None` only if libc lacks it (the hook then fails with ENOSYS).
            pub fn $name() -> Option<$tyname> {
                static SLOT: AtomicUsize = AtomicUsize::new(0);
                let p = resolve(&SLOT, $sym);
                // SAFETY: dlsym gave the address of the libc function with this signature.
                (p != 0).then(|| unsafe { std::mem::transmute::<usize, $tyname>(p) })
            }
        )*

        /// Fills every slot (called from the library constructor).
        pub fn resolve_all() {
            $( let _ = $name(); )*
        }
    };
}

real_fns! {
    connect / Connect: unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int = c"connect";
    getpeername / Getpeername: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int = c"getpeername";
    sendto / Sendto: unsafe extern "C" fn(c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t = c"sendto";
    sendmsg / Sendmsg: unsafe extern "C" fn(c_int, *const msghdr, c_int) -> ssize_t = c"sendmsg";
    sendmmsg / Sendmmsg: unsafe extern "C" fn(c_int, *mut mmsghdr, c_uint, c_int) -> c_int = c"sendmmsg";
    getaddrinfo / Getaddrinfo: unsafe extern "C" fn(*const c_char, *const c_char, *const addrinfo, *mut *mut addrinfo) -> c_int = c"getaddrinfo";
    freeaddrinfo / Freeaddrinfo: unsafe extern "C" fn(*mut addrinfo) = c"freeaddrinfo";
    gethostbyname / Gethostbyname: unsafe extern "C" fn(*const c_char) -> *mut hostent = c"gethostbyname";
    gethostbyname2 / Gethostbyname2: unsafe extern "C" fn(*const c_char, c_int) -> *mut hostent = c"gethostbyname2";
    gethostbyname_r / GethostbynameR: unsafe extern "C" fn(*const c_char, *mut hostent, *mut c_char, size_t, *mut *mut hostent, *mut c_int) -> c_int = c"gethostbyname_r";
    gethostbyname2_r / Gethostbyname2R: unsafe extern "C" fn(*const c_char, c_int, *mut hostent, *mut c_char, size_t, *mut *mut hostent, *mut c_int) -> c_int = c"gethostbyname2_r";
    gethostbyaddr / Gethostbyaddr: unsafe extern "C" fn(*const c_void, socklen_t, c_int) -> *mut hostent = c"gethostbyaddr";
    gethostbyaddr_r / GethostbyaddrR: unsafe extern "C" fn(*const c_void, socklen_t, c_int, *mut hostent, *mut c_char, size_t, *mut *mut hostent, *mut c_int) -> c_int = c"gethostbyaddr_r";
    getnameinfo / Getnameinfo: unsafe extern "C" fn(*const sockaddr, socklen_t, *mut c_char, socklen_t, *mut c_char, socklen_t, c_int) -> c_int = c"getnameinfo";
    read / Read: unsafe extern "C" fn(c_int, *mut c_void, size_t) -> ssize_t = c"read";
    read_chk / ReadChk: unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t) -> ssize_t = c"__read_chk";
    write / Write: unsafe extern "C" fn(c_int, *const c_void, size_t) -> ssize_t = c"write";
    readv / Readv: unsafe extern "C" fn(c_int, *const libc::iovec, c_int) -> ssize_t = c"readv";
    writev / Writev: unsafe extern "C" fn(c_int, *const libc::iovec, c_int) -> ssize_t = c"writev";
    recv / Recv: unsafe extern "C" fn(c_int, *mut c_void, size_t, c_int) -> ssize_t = c"recv";
    recv_chk / RecvChk: unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t, c_int) -> ssize_t = c"__recv_chk";
    send / Send: unsafe extern "C" fn(c_int, *const c_void, size_t, c_int) -> ssize_t = c"send";
    recvfrom / Recvfrom: unsafe extern "C" fn(c_int, *mut c_void, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t = c"recvfrom";
    recvfrom_chk / RecvfromChk: unsafe extern "C" fn(c_int, *mut c_void, size_t, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t = c"__recvfrom_chk";
    recvmsg / Recvmsg: unsafe extern "C" fn(c_int, *mut msghdr, c_int) -> ssize_t = c"recvmsg";
    recvmmsg / Recvmmsg: unsafe extern "C" fn(c_int, *mut mmsghdr, c_uint, c_int, *mut libc::timespec) -> c_int = c"recvmmsg";
    close / Close: unsafe extern "C" fn(c_int) -> c_int = c"close";
    close_range / CloseRange: unsafe extern "C" fn(c_uint, c_uint, c_int) -> c_int = c"close_range";
    closefrom / Closefrom: unsafe extern "C" fn(c_int) = c"closefrom";
    dup2 / Dup2: unsafe extern "C" fn(c_int, c_int) -> c_int = c"dup2";
    dup3 / Dup3: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int = c"dup3";
    setsockopt / Setsockopt: unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int = c"setsockopt";
    getsockopt / Getsockopt: unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int = c"getsockopt";
    getaddrinfo_a / GetaddrinfoA: unsafe extern "C" fn(c_int, *mut *mut crate::hooks::res::Gaicb, c_int, *mut libc::sigevent) -> c_int = c"getaddrinfo_a";
    res_query / ResQuery: unsafe extern "C" fn(*const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int = c"res_query";
    res_search / ResSearch: unsafe extern "C" fn(*const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int = c"res_search";
    res_querydomain / ResQuerydomain: unsafe extern "C" fn(*const c_char, *const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int = c"res_querydomain";
    res_send / ResSend: unsafe extern "C" fn(*const c_uchar, c_int, *mut c_uchar, c_int) -> c_int = c"res_send";
    res_nquery / ResNquery: unsafe extern "C" fn(*mut c_void, *const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int = c"res_nquery";
    res_nsearch / ResNsearch: unsafe extern "C" fn(*mut c_void, *const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int = c"res_nsearch";
    res_nquerydomain / ResNquerydomain: unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int = c"res_nquerydomain";
    res_nsend / ResNsend: unsafe extern "C" fn(*mut c_void, *const c_uchar, c_int, *mut c_uchar, c_int) -> c_int = c"res_nsend";
}
