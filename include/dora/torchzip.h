/* torchzip.h - PyTorch checkpoints (.bin, .pt, .pth) written by torch.save.
 *
 * Since PyTorch 1.6 torch.save writes a zip archive (entries stored, not
 * compressed): ARCHIVE/data.pkl, the pickled object; ARCHIVE/data/KEY, one raw
 * little-endian record per storage; ARCHIVE/byteorder in newer versions. The
 * archive folder's name varies, so the one "*\/data.pkl" is used. libzip reads
 * and checks the archive (ZIP_CHECKCONS); the records are mapped, not copied:
 * their offsets are observed through a libzip source that serves the mapping.
 * The pickle goes through the restricted interpreter of pickle.h.
 *
 * Tensors honour storage offset, shape and strides; several may share a
 * storage. A view whose elements overlap (expand(): stride 0 on a dim of size
 * > 1, or strides that revisit elements) is not a weight and is refused, so
 * every view's elements are distinct elements of its storage and its bytes
 * at most its record's; every size is checked for 64-bit overflow. A
 * contiguous view points into the mapping; a non-contiguous one (a transposed
 * weight, say) is gathered once into a contiguous buffer owned by the file
 * (so at most the file's own bytes in all). Every read of the mapping while
 * the archive is parsed is guarded (guard.h): a file truncated underneath is
 * an error naming it. The legacy (pre-1.6) format and big-endian records are
 * refused with a clear error.
 */
#ifndef DORA_TORCHZIP_H
#define DORA_TORCHZIP_H

#include "dora/error.h"
#include "dora/safetensors.h"

#define PT_MAX_ENTRIES 1000000
#define PT_MAX_PICKLE (1ULL << 30)

/* Open PATH as a torch.save zip; on success *out is an st_file with format
 * "pytorch" whose tensors are named by their dotted path in the pickled object
 * (see pickle.h). Release with st_close. */
int pt_open(st_file **out, const char *path, dora_err *err);

#endif
