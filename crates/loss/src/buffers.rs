//! Large zeroed f32 buffers backed by transparent huge pages where the kernel offers them.
//!
//! The key table and the gather backward's gradient are fresh 134 MB buffers at the VOC
//! shape on every call: with 4 KiB pages each costs ~33 k first-touch page faults, and
//! the key table's walks miss the TLB on every new page. Asking for 2 MiB pages
//! (`madvise(MADV_HUGEPAGE)`, honoured when `/sys/kernel/mm/transparent_hugepage/enabled`
//! is `always` or `madvise`) makes that 67 faults and keeps the whole table in the TLB.
//! Elsewhere, or when the kernel declines, this is a plain zeroed `Vec`. (Binaries that
//! install `reco_util::alloc::HugePageAlloc` get this for every buffer of 32 MiB and more;
//! the library does not rely on it.)

/// Buffers below this size stay on ordinary pages (not worth a system call).
const MIN_HUGE_BYTES: usize = 8 << 20;

/// `vec![0f32; n]`, advised to use huge pages before any page is touched.
pub(crate) fn zeroed_f32(n: usize) -> Vec<f32> {
    // A large `calloc` is a fresh anonymous mapping whose pages are not touched yet.
    let v = vec![0f32; n];
    if n * std::mem::size_of::<f32>() >= MIN_HUGE_BYTES {
        reco_util::alloc::advise_huge_pages(&v);
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_and_small_buffers_are_zeroed_and_writable() {
        for n in [0, 5, (16 << 20) / 4 + 3] {
            let mut v = super::zeroed_f32(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 0.0));
            if let Some(last) = v.last_mut() {
                *last = 1.0;
            }
            assert_eq!(v.iter().sum::<f32>(), if n > 0 { 1.0 } else { 0.0 });
        }
    }
}
