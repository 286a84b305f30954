build-new/obj/cli/term.o: src/cli/term.c src/cli/cli.h \
 include/dora/error.h include/dora/filter.h include/dora/progress.h
src/cli/cli.h:
include/dora/error.h:
include/dora/filter.h:
include/dora/progress.h:
