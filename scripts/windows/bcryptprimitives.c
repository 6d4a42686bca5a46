/* A stand-in for Windows' bcryptprimitives.dll, for running dcb.exe under Wine 8.0
 * only (Debian 12's wine64 has no such DLL, and Rust's standard library imports
 * ProcessPrng from it, so every Rust program fails to start there). Never shipped:
 * the Windows smoke test and the unit-test runner put it where the loader finds it.
 *
 * ProcessPrng fills a buffer with random bytes from the OS; here it is built on
 * RtlGenRandom (exported by advapi32 as SystemFunction036), which Wine has.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -static-libgcc -o bcryptprimitives.dll \
 *        bcryptprimitives.c -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T size)
{
    /* RtlGenRandom takes a ULONG length; ProcessPrng a SIZE_T: fill in chunks. */
    while (size > 0) {
        ULONG chunk = size > 0x10000000 ? 0x10000000 : (ULONG)size;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        size -= chunk;
    }
    return TRUE;
}
