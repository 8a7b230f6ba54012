//go:build chaosplant

package pgproc

// plantedFence reduces every fence to a SIGKILL of the postmaster, the
// defect issue 13 fixed (backends outlive it). Only the fault campaign
// builds it (-tags chaosplant), to prove its checker catches the overlap
// that defect causes; nothing shipped is built with it.
const plantedFence = true
