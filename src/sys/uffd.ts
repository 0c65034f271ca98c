// userfaultfd: ioctl numbers, features and register modes (linux/userfaultfd.h).
export const UFFDIO_API = 0xc018aa3f, UFFDIO_REGISTER = 0xc020aa00, UFFDIO_WRITEPROTECT = 0xc018aa06;
export const UFFD_API = 0xaa;
/** userfaultfd(2) flag: handle user-space faults only (enough for write-protect tracking) */
export const UFFD_USER_MODE_ONLY = 1;
export const UFFDIO_REGISTER_MODE = { MISSING: 1, WP: 2, MINOR: 4 } as const;
export const UFFD_FEATURE = {
  PAGEFAULT_FLAG_WP: 1, EVENT_FORK: 2, EVENT_REMAP: 4, EVENT_REMOVE: 8, EVENT_UNMAP: 0x40,
  WP_UNPOPULATED: 0x2000, WP_ASYNC: 0x8000,
} as const;
/** PAGEMAP_SCAN flags (linux/fs.h) */
export const PM_SCAN = { WP_MATCHING: 1, CHECK_WPASYNC: 2 } as const;
