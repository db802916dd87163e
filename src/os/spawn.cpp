#include "os/spawn.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <mutex>

#include "os/signals.hpp"

namespace clutch::os {

const char* to_string(spawn_stage stage) noexcept {
  switch (stage) {
    case spawn_stage::none: return "none";
    case spawn_stage::clone: return "clone";
    case spawn_stage::signals: return "signals";
    case spawn_stage::session: return "session";
    case spawn_stage::credentials: return "credentials";
    case spawn_stage::fds: return "fds";
    case spawn_stage::chdir: return "chdir";
    case spawn_stage::close_fds: return "close_fds";
    case spawn_stage::exec: return "exec";
  }
  return "unknown";
}

namespace {

// Everything the child reads, flattened into plain pointers in the parent, so that the child touches no container
// code. The child writes only stage and error, which the parent reads after clone() returns: CLONE_VFORK makes
// that a proper happens-before (the parent sleeps until the child has exec'd or exited).
struct child_context {
  const char* const* candidates;
  std::size_t candidate_count;
  char* const* argv;
  char* const* envp;
  const char* cwd;
  const int* fds;
  int* scratch;  // one per planned fd
  unsigned fd_count;
  bool new_session;
  bool new_process_group;
  int death_signal;
  pid_t parent_pid;
  bool set_uid, set_gid;
  uid_t uid;
  gid_t gid;
  char* pid_digits;
  int stage;
  int error;
};

// The kernel's struct sigaction, which differs from glibc's: raw rt_sigaction needs this layout.
struct kernel_sigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  unsigned long mask;
};

// ---- Everything below up to child_main runs in the child after clone(CLONE_VM | CLONE_VFORK). ----------------
// It shares the parent's memory and its thread's TLS, so it must not allocate, lock, throw or call into libc
// beyond syscall(): glibc's setuid() would try to synchronise the parent's threads, sigaction() may be intercepted
// by sanitizers. Sanitizers are off here because their runtime is not safe to enter from this half-process.
#define CLUTCH_CHILD_CODE __attribute__((no_sanitize("address", "undefined"), noinline))

CLUTCH_CHILD_CODE long raw(long rc) { return rc == -1 ? errno : 0; }

[[noreturn]] CLUTCH_CHILD_CODE void fail(child_context* c, spawn_stage stage, long error) {
  c->stage = static_cast<int>(stage);
  c->error = static_cast<int>(error);
  ::syscall(SYS_exit, 127);
  __builtin_unreachable();
}

struct linux_dirent64 {
  unsigned long long d_ino;
  long long d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];
};

// close_range's stand-in for kernels before 5.9: every descriptor >= fd_count that /proc/self/fd lists.
CLUTCH_CHILD_CODE void close_listed_fds(child_context* c) {
  long dir = ::syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) {
    // No /proc either: close up to the descriptor limit, asked only now since this path is so rarely taken.
    rlimit lim{};
    unsigned limit = 1U << 16;
    if (::syscall(SYS_getrlimit, RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < (1U << 20)) {
      limit = static_cast<unsigned>(lim.rlim_cur);
    }
    for (unsigned fd = c->fd_count; fd < limit; ++fd) ::syscall(SYS_close, fd);
    return;
  }
  alignas(8) char buf[4096];
  // Closing entries while reading the directory may make the kernel skip some, so read it again until a whole
  // pass closes nothing.
  bool closed_any = true;
  while (closed_any) {
    closed_any = false;
    ::syscall(SYS_lseek, dir, 0, SEEK_SET);
    long n;
    while ((n = ::syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
      for (long off = 0; off < n;) {
        auto* e = reinterpret_cast<linux_dirent64*>(buf + off);
        off += e->d_reclen;
        long fd = 0;
        const char* p = e->d_name;
        if (*p < '0' || *p > '9') continue;
        for (; *p >= '0' && *p <= '9'; ++p) fd = fd * 10 + (*p - '0');
        if (fd == dir || fd < static_cast<long>(c->fd_count)) continue;
        ::syscall(SYS_close, fd);
        closed_any = true;
      }
    }
  }
  ::syscall(SYS_close, dir);
}

CLUTCH_CHILD_CODE int child_main(void* arg) {
  auto* c = static_cast<child_context*>(arg);
  long err;

  // Every handler goes back to its default: until exec, a handler would run the parent's code on the parent's
  // memory; and like libuv we also undo SIG_IGN, so that a parent that ignores SIGPIPE does not hand that on.
  kernel_sigaction dfl{};
  dfl.handler = SIG_DFL;
  for (int sig = 1; sig < 65; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    err = raw(::syscall(SYS_rt_sigaction, sig, &dfl, nullptr, sizeof dfl.mask));
    if (err != 0 && err != EINVAL) fail(c, spawn_stage::signals, err);
  }

  if (c->new_session) {
    if ((err = raw(::syscall(SYS_setsid))) != 0) fail(c, spawn_stage::session, err);
  } else if (c->new_process_group) {
    if ((err = raw(::syscall(SYS_setpgid, 0, 0))) != 0) fail(c, spawn_stage::session, err);
  }


  // Groups first: once the uid has changed we may no longer be allowed to change them.
  if (c->set_uid || c->set_gid) {
    if ((err = raw(::syscall(SYS_setgroups, 0, nullptr))) != 0 && err != EPERM) fail(c, spawn_stage::credentials, err);
    if (c->set_gid && (err = raw(::syscall(SYS_setgid, c->gid))) != 0) fail(c, spawn_stage::credentials, err);
    if (c->set_uid && (err = raw(::syscall(SYS_setuid, c->uid))) != 0) fail(c, spawn_stage::credentials, err);
  }
  // After the credentials: changing them clears the parent-death signal.
  if (c->death_signal != 0) {
    if ((err = raw(::syscall(SYS_prctl, PR_SET_PDEATHSIG, c->death_signal, 0, 0, 0))) != 0) {
      fail(c, spawn_stage::session, err);
    }
    // The parent may have died (another of its threads was killed with it) before the prctl took effect; then no
    // signal will come, and the child must not start orphaned.
    if (::syscall(SYS_getppid) != c->parent_pid) fail(c, spawn_stage::session, ESRCH);
  }

  // Two passes, because a source may be a target of another slot (swap 1 and 2): first every source is copied
  // above the planned range, then each copy is moved into place. dup3 clears close-on-exec on the target.
  for (unsigned i = 0; i < c->fd_count; ++i) {
    c->scratch[i] = -1;
    if (c->fds[i] < 0) continue;
    long fd = ::syscall(SYS_fcntl, c->fds[i], F_DUPFD_CLOEXEC, c->fd_count);
    if (fd < 0) fail(c, spawn_stage::fds, errno);
    c->scratch[i] = static_cast<int>(fd);
  }
  for (unsigned i = 0; i < c->fd_count; ++i) {
    if (c->scratch[i] < 0) {
      ::syscall(SYS_close, i);
    } else if ((err = raw(::syscall(SYS_dup3, c->scratch[i], i, 0))) != 0) {
      fail(c, spawn_stage::fds, err);
    }
  }

  if (c->cwd != nullptr && (err = raw(::syscall(SYS_chdir, c->cwd))) != 0) fail(c, spawn_stage::chdir, err);

  // Everything we open is close-on-exec already; this catches descriptors other code in the process opened
  // without it. close_range needs Linux 5.9; before that, list /proc/self/fd, and without /proc close one by one.
  if ((err = raw(::syscall(SYS_close_range, c->fd_count, ~0U, 0))) != 0) {
    if (err != ENOSYS && err != EINVAL) fail(c, spawn_stage::close_fds, err);
    close_listed_fds(c);
  }

  // An empty mask, as libuv gives Node's children: a parent that blocks SIGTERM for its signalfd must not hand
  // down a child that our own kill_signal cannot reach.
  unsigned long empty_mask = 0;
  if ((err = raw(::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty_mask, nullptr, sizeof empty_mask))) != 0) {
    fail(c, spawn_stage::signals, err);
  }

  if (c->pid_digits != nullptr) {
    char digits[20];
    int n = 0;
    for (unsigned long pid = static_cast<unsigned long>(::syscall(SYS_getpid)); n == 0 || pid > 0; pid /= 10)
      digits[n++] = static_cast<char>('0' + pid % 10);
    for (int i = 0; i < n; ++i) c->pid_digits[i] = digits[n - 1 - i];
    c->pid_digits[n] = '\0';
  }

  // execvp's rules for a PATH search: go on past a missing or unreadable entry, report EACCES if any candidate
  // was found but not executable, and stop at any other error.
  long last = ENOENT;
  bool saw_eacces = false;
  for (std::size_t i = 0; i < c->candidate_count; ++i) {
    err = raw(::syscall(SYS_execve, c->candidates[i], c->argv, c->envp));
    switch (err) {
      case EACCES: saw_eacces = true; [[fallthrough]];
      case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT: case ELOOP: case ENAMETOOLONG:
        last = err;
        continue;
      default:
        fail(c, spawn_stage::exec, err);
    }
  }
  fail(c, spawn_stage::exec, saw_eacces ? EACCES : last);
}
// ---- End of the child's code. -----------------------------------------------------------------------------------

// 64 KiB is far more than child_main's frames need; the stack is mapped fresh for each spawn, which costs a
// couple of microseconds against the half millisecond that exec itself takes.
constexpr std::size_t child_stack_size = 64 * 1024;


}  // namespace

spawn_result spawn(const spawn_plan& plan) noexcept {
  spawn_result result;
  constexpr unsigned max_fds = 256;
  if (plan.fds.size() > max_fds) {
    result.stage = spawn_stage::fds;
    result.error = EINVAL;
    return result;
  }
  int scratch[max_fds];

  child_context ctx{};
  ctx.candidates = plan.candidates.data();
  ctx.candidate_count = plan.candidates.size();
  ctx.argv = plan.argv.data();
  ctx.envp = plan.envp.data();
  ctx.pid_digits = plan.pid_digits;
  ctx.cwd = plan.cwd;
  ctx.fds = plan.fds.data();
  ctx.scratch = scratch;
  ctx.fd_count = static_cast<unsigned>(plan.fds.size());
  ctx.new_session = plan.new_session;
  ctx.new_process_group = plan.new_process_group;
  ctx.death_signal = plan.death_signal;
  ctx.parent_pid = ::getpid();
  ctx.set_uid = plan.uid.has_value();
  ctx.set_gid = plan.gid.has_value();
  ctx.uid = plan.uid.value_or(0);
  ctx.gid = plan.gid.value_or(0);

  void* stack = ::mmap(nullptr, child_stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                       -1, 0);
  if (stack == MAP_FAILED) {
    result.stage = spawn_stage::clone;
    result.error = errno;
    return result;
  }

  // With lazy binding, the first call of a libc function through the PLT runs the dynamic linker's resolver, which
  // takes the linker's lock and writes the calling thread's TCB: not something the child may do on our behalf.
  // Running the child's own helper once here, on a call that fails (so that errno is read too), resolves both
  // libc functions it uses before any child runs.
  static std::once_flag resolved;
  std::call_once(resolved, [] { raw(::syscall(SYS_close, -1)); });

  int pidfd = -1;
  pid_t pid;
  int clone_errno = 0;
  {
    all_signals_blocked blocked;
    // SIGCHLD as the exit signal keeps it an ordinary child: waitid() without __WCLONE sees it, and code in the
    // process that counts on SIGCHLD still gets it. The stack grows down, so clone() takes its top.
    pid = ::clone(child_main, static_cast<char*>(stack) + child_stack_size,
                  CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &ctx, &pidfd);
    if (pid < 0) clone_errno = errno;
  }
  ::munmap(stack, child_stack_size);

  if (pid < 0) {
    result.stage = spawn_stage::clone;
    result.error = clone_errno;
    return result;
  }
  unique_fd owned_pidfd{pidfd};
  if (ctx.stage != 0) {
    // The child wrote its failure and called exit; CLONE_VFORK woke us when it released the memory, which may be
    // a moment before it is a zombie, so this wait blocks (briefly) rather than polls.
    siginfo_t info;
    while (::waitid(P_PIDFD, static_cast<id_t>(owned_pidfd.get()), &info, WEXITED) != 0 && errno == EINTR) {
    }
    result.stage = static_cast<spawn_stage>(ctx.stage);
    result.error = ctx.error;
    return result;
  }
  result.pid = pid;
  result.pidfd = std::move(owned_pidfd);
  return result;
}

}  // namespace clutch::os
