build-new/obj/analysis/kernel.o: src/analysis/kernel.c \
 include/dora/kernel.h include/dora/tensor.h \
 /usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-openmp/openblas_config.h \
 src/analysis/kernel_x86.h
include/dora/kernel.h:
include/dora/tensor.h:
/usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-openmp/openblas_config.h:
src/analysis/kernel_x86.h:
