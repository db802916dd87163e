# cmake -DCLUTCH=path/to/clutch -DOUT=dir -DBINDIR=/usr/bin -P share.cmake: writes what `clutch` prints of itself
# for a system to install (see CMakeLists.txt beside this file). A failing clutch fails the build.
function(print_to file)
  execute_process(COMMAND ${CLUTCH} ${ARGN} OUTPUT_FILE ${file} RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "clutch ${ARGN} failed (${rc}): ${err}")
  endif()
endfunction()

file(MAKE_DIRECTORY ${OUT})
print_to(${OUT}/clutch.1 manpage)
print_to(${OUT}/clutch.bash completion bash)
print_to(${OUT}/_clutch completion zsh)
print_to(${OUT}/clutch@.service startup --template --exe ${BINDIR}/clutch)
# Debian's man pages are compressed; -n leaves out the name and time, so that two builds give the same bytes.
file(REMOVE ${OUT}/clutch.1.gz)
execute_process(COMMAND gzip -9n ${OUT}/clutch.1 RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gzip failed (${rc})")
endif()
