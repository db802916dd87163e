# clutch_layer(NAME SOURCES file… USES layer…): one layer of the library, the folder src/NAME, as an object library
# clutch_NAME. USES names the layers it builds on (their usage requirements come with them); which headers of
# theirs it may include is checked by the layers test (cmake/check_layers.cmake). The installed library, clutch,
# is the objects of every layer.
function(clutch_layer name)
  cmake_parse_arguments(L "" "" "SOURCES;USES" ${ARGN})
  add_library(clutch_${name} OBJECT ${L_SOURCES})
  target_include_directories(clutch_${name} PUBLIC ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(clutch_${name} PUBLIC Boost::headers Boost::json Threads::Threads)
  foreach(used IN LISTS L_USES)
    target_link_libraries(clutch_${name} PUBLIC clutch_${used})
  endforeach()
  target_compile_features(clutch_${name} PUBLIC cxx_std_20)
  set_target_properties(clutch_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()
