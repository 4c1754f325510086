//! A global allocator that backs large buffers with transparent huge pages.
//!
//! The buffers of a training step that glibc maps afresh on every allocation (all those of
//! 32 MiB and more: the ReCo loss's key table and gradients, 134 MB each at the VOC shape;
//! the backward pass's gradient sums) are touched page by page, one page fault per 4 KiB,
//! and their random-access walks miss the TLB. With 2 MiB pages the faults are 512 times
//! fewer. The kernel only gives huge pages to regions that ask for them when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` (the common default), and a
//! 2 MiB page needs a 2 MiB-aligned address, which glibc's mappings do not have. So
//! allocations of [`HUGE_THRESHOLD`] bytes and more are mapped here directly, 2 MiB-aligned
//! and advised with `MADV_HUGEPAGE`; smaller ones go to the system allocator unchanged.
//! Where the kernel declines (THP `never`, no free huge pages), they are ordinary pages,
//! exactly as before. Measured on the ReCo loss (issue 15): docs/benchmarks.md.
//!
//! Binaries opt in (`#[global_allocator] static A: HugePageAlloc = HugePageAlloc;`);
//! libraries never choose an allocator for their users.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations from this size on are mapped with huge pages: glibc maps these afresh on
/// every allocation anyway (its largest dynamic mmap threshold), so smaller, recycled
/// heap buffers keep their behaviour.
pub const HUGE_THRESHOLD: usize = 32 << 20;

const HUGE_PAGE: usize = 2 << 20;

/// See the module documentation.
pub struct HugePageAlloc;

fn is_huge(layout: &Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= HUGE_THRESHOLD && layout.align() <= HUGE_PAGE
}

// SAFETY: every pointer is returned by the same path (system or mapping) that frees it,
// chosen from the layout alone, which `GlobalAlloc` guarantees is the same at dealloc;
// mappings are at least `layout.size()` bytes, aligned to 2 MiB >= `layout.align()`.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            huge::map(layout.size())
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // Anonymous mappings are zero-filled by the kernel.
            huge::map(layout.size())
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            huge::unmap(ptr, layout.size())
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !is_huge(&layout) && !is_huge(&new_layout) {
            return System.realloc(ptr, layout, new_size);
        }
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

/// Asks the kernel to back the 2 MiB-aligned interior of `buf` with huge pages (advice
/// only: where THP is off or none are free, the pages stay ordinary). For buffers a library
/// allocates itself, whatever allocator the binary chose; call it before the pages are
/// first touched.
pub fn advise_huge_pages<T>(buf: &[T]) {
    #[cfg(target_os = "linux")]
    {
        let ptr = buf.as_ptr() as usize;
        let start = ptr.next_multiple_of(HUGE_PAGE);
        let end = (ptr + std::mem::size_of_val(buf)) / HUGE_PAGE * HUGE_PAGE;
        if end > start {
            // SAFETY: the range lies inside `buf`, memory this process owns;
            // MADV_HUGEPAGE changes how the kernel backs it, never its contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod huge {
    use super::HUGE_PAGE;

    fn mapped_len(size: usize) -> usize {
        size.next_multiple_of(HUGE_PAGE)
    }

    /// A fresh zeroed mapping of at least `size` bytes at a 2 MiB boundary, advised to
    /// use huge pages; null when the system refuses it.
    pub(super) unsafe fn map(size: usize) -> *mut u8 {
        let len = mapped_len(size);
        // Over-map by one huge page, then trim the unaligned head and the tail.
        let raw = libc::mmap(
            std::ptr::null_mut(),
            len + HUGE_PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if raw == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(HUGE_PAGE);
        if aligned > start {
            libc::munmap(raw, aligned - start);
        }
        let tail = start + len + HUGE_PAGE - (aligned + len);
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        super::advise_huge_pages(std::slice::from_raw_parts(aligned as *const u8, len));
        aligned as *mut u8
    }

    pub(super) unsafe fn unmap(ptr: *mut u8, size: usize) {
        libc::munmap(ptr.cast(), mapped_len(size));
    }
}

#[cfg(not(target_os = "linux"))]
mod huge {
    // `is_huge` is false off Linux, so these are never called.
    pub(super) unsafe fn map(_size: usize) -> *mut u8 {
        std::ptr::null_mut()
    }
    pub(super) unsafe fn unmap(_ptr: *mut u8, _size: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_are_aligned_zeroed_writable_and_grow() {
        let a = HugePageAlloc;
        for size in [
            2usize,
            4096,
            HUGE_THRESHOLD - 1,
            HUGE_THRESHOLD,
            HUGE_THRESHOLD + 12345,
        ] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null(), "size {size}");
                if size >= HUGE_THRESHOLD {
                    assert_eq!(p as usize % HUGE_PAGE, 0, "size {size}");
                }
                let s = std::slice::from_raw_parts_mut(p, size);
                assert!(s.iter().step_by(4093).all(|&b| b == 0));
                s[0] = 7;
                s[size - 1] = 9;
                // Growing across the threshold keeps the contents.
                let q = a.realloc(p, layout, size + HUGE_THRESHOLD);
                assert!(!q.is_null());
                let t = std::slice::from_raw_parts(q, size);
                assert_eq!((t[0], t[size - 1]), (7, 9));
                a.dealloc(
                    q,
                    Layout::from_size_align(size + HUGE_THRESHOLD, 8).unwrap(),
                );
            }
        }
    }

    #[test]
    fn a_large_buffer_holds_what_is_written() {
        // 40 MiB of f32, written whole (every huge page touched) and read back.
        let a = HugePageAlloc;
        let layout = Layout::array::<f32>(10 << 20).unwrap();
        unsafe {
            let p = a.alloc(layout).cast::<f32>();
            let v = std::slice::from_raw_parts_mut(p, 10 << 20);
            v.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32);
            assert_eq!(v[(10 << 20) - 1], ((10 << 20) - 1) as f32);
            a.dealloc(p.cast(), layout);
        }
    }
}
