// What the clutch command prints of itself for a system to install (its completions, its man page, its systemd
// unit template), tried in the programs that read them: bash, zsh, groff. And its refusal on a kernel without
// pidfds, shown by a seccomp filter that answers as an older kernel does (tests/fixtures/old_kernel.c).
#include <clutch/child_process.hpp>
#include <gtest/gtest.h>
#include <unistd.h>

#include <sstream>

#include "clutch_run.hpp"
#include "helpers.hpp"

namespace {

using clutch_test::clutch_home;

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

clutch::sync_result sh(const std::string& shell, const std::string& script) {
  clutch::options o;
  o.timeout = std::chrono::seconds(60);
  o.env = clutch::environment::add({{"CLUTCH", clutch_test::clutch_binary()}});
  return clutch::spawn_sync(shell, {"-c", script}, o);
}

// The commands `clutch --help` lists: the truth the other forms are held to.
std::vector<std::string> listed_commands() {
  clutch_home cli;
  const auto help = cli({"--help"}).out;
  std::vector<std::string> names;
  std::istringstream in(help.substr(help.find("Subcommands:")));
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line))
    if (line.size() > 2 && line[0] == ' ' && line[2] != ' ') names.push_back(line.substr(2, line.find(' ', 2) - 2));
  return names;
}

// What bash's completion offers for the words typed so far (the last one being completed).
std::string bash_completes(const std::string& words) {
  auto r = sh("bash", "source <(\"$CLUTCH\" completion bash) || exit 9; COMP_WORDS=(" + words +
                          "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _clutch; echo \"${COMPREPLY[*]}\"");
  EXPECT_EQ(r.status.code, 0) << r.err;
  return r.out;
}

TEST(CliDocs, BashCompletesTheCommandsThenTheChosenCommandsOptions) {
  const auto names = listed_commands();
  ASSERT_GE(names.size(), 15u);
  const auto all = bash_completes("clutch ''");
  for (const auto& n : names)
    EXPECT_TRUE(contains(" " + all, " " + n + " ") || contains(" " + all, " " + n + "\n")) << n << ": " << all;
  EXPECT_FALSE(contains(all, "manpage")) << all;  // the hidden one
  EXPECT_EQ(bash_completes("clutch st"), "start status stop startup\n");
  EXPECT_EQ(bash_completes("clutch logs --f"), "--follow\n");
  EXPECT_EQ(bash_completes("clutch start --max"), "--max-memory\n");
  // After --, the words are the program's: clutch offers nothing of its own.
  EXPECT_EQ(bash_completes("clutch run -- node --wor"), "\n");
}

TEST(CliDocs, ZshLoadsTheCompletionAndKnowsEveryCommand) {
  std::string why;
  ASSERT_TRUE(clutch_test::tool_installed("/usr/bin/zsh", "zsh", &why)) << why;
  auto r = sh("/usr/bin/zsh", "\"$CLUTCH\" completion zsh > $TMPDIR/_clutch_$$ && zsh -n $TMPDIR/_clutch_$$; s=$?; "
                              "rm -f $TMPDIR/_clutch_$$; exit $s");
  EXPECT_EQ(r.status.code, 0) << r.err;
  // Loaded into a real completion system, it registers for clutch and describes every command.
  r = sh("/usr/bin/zsh", "autoload -U compinit && compinit -u -D && source <(\"$CLUTCH\" completion zsh) && "
                         "print -r -- ${_comps[clutch]} && functions _clutch");
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_TRUE(r.out.starts_with("_clutch\n")) << r.out;
  for (const auto& n : listed_commands()) EXPECT_TRUE(contains(r.out, "'" + n + ":")) << n;
}

TEST(CliDocs, TheManPageIsCleanRoffWithEveryCommandAndOption) {
  clutch_home cli;
  const auto page = cli({"manpage"});
  ASSERT_EQ(page.status.code, 0) << page.err;
  clutch::options o;
  o.input = page.out;
  o.timeout = std::chrono::seconds(60);
  // -ww: every warning; a character groff cannot read, or a bad request, is one.
  auto checked = clutch::spawn_sync("groff", {"-man", "-Tutf8", "-ww", "-z"}, o);
  EXPECT_EQ(checked.status.code, 0);
  EXPECT_EQ(checked.err, "");
  auto text = clutch::spawn_sync("groff", {"-man", "-Tascii", "-P", "-cbou"}, o).out;
  for (const auto& n : listed_commands()) EXPECT_TRUE(contains(text, "clutch " + n)) << n;
  // Every option of start, as its --help names it.
  const auto help = cli({"start", "--help"}).out;
  int options = 0;
  for (std::size_t at = help.find("\n  --"); at != std::string::npos; at = help.find("\n  --", at + 1)) {
    const auto name = help.substr(at + 3, help.find_first_of(" ,\n", at + 3) - at - 3);
    EXPECT_TRUE(contains(text, name)) << name;
    ++options;
  }
  EXPECT_GE(options, 20);
}

TEST(CliDocs, StartupTemplateIsAUnitForAnyUser) {
  clutch_home cli;
  auto r = cli({"startup", "--template", "--exe", "/usr/bin/clutch"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  for (const char* line : {"\nUser=%i\n", "\nExecStart=/usr/bin/clutch daemon --resurrect\n", "\nType=notify\n",
                           "\nExecStop=/usr/bin/clutch kill\n", "\nRestart=always\n"})
    EXPECT_TRUE(contains(r.out, line)) << line << r.out;
  // Nothing of this user's: no CLUTCH_HOME, no PATH.
  EXPECT_FALSE(contains(r.out, "Environment=")) << r.out;
  r = cli({"startup", "--template", "--install"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_TRUE(contains(r.err, "--template prints")) << r.err;
}

TEST(CliDocs, CompletionOfAnotherShellIsAUsageError) {
  clutch_home cli;
  auto r = cli({"completion", "fish"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_TRUE(contains(r.err, "fish")) << r.err;
}

// ---- an older kernel ------------------------------------------------------------------------------------------

clutch::sync_result as_old_kernel(const std::string& version, std::vector<std::string> args) {
  clutch_home cli;
  args.insert(args.begin(), {version, clutch_test::clutch_binary()});
  clutch::options o;
  o.env = clutch::environment::add({{"CLUTCH_HOME", cli.home.path}});
  o.timeout = std::chrono::seconds(60);
  return clutch::spawn_sync(CLUTCH_OLD_KERNEL, args, o);
}

TEST(OldKernel, WithoutPidfdOpenClutchSaysWhatItNeedsAndStartsNothing) {
  for (const auto& args : std::vector<std::vector<std::string>>{{"ls"}, {"start", "--name", "x", "--", "sleep", "60"},
                                                                {"run", "--workers", "1", "--", "sleep", "60"}}) {
    auto r = as_old_kernel("5.2", args);
    EXPECT_EQ(r.status.code, 1) << args[0] << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "has no pidfd_open (Linux 5.3); clutch needs Linux 5.4 or later")) << r.err;
    EXPECT_EQ(r.out, "");
  }
}

TEST(OldKernel, WithoutWaitidOnPidfdsClutchSaysWhatItNeeds) {
  auto r = as_old_kernel("5.3", {"ls"});
  EXPECT_EQ(r.status.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "has no waitid(P_PIDFD) (Linux 5.4); clutch needs Linux 5.4 or later")) << r.err;
}

TEST(OldKernel, ASeccompProfileThatRefusesPidfdsIsNamed) {
  auto r = as_old_kernel("eperm", {"ls"});
  EXPECT_EQ(r.status.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "pidfd_open is refused (EPERM): a seccomp profile blocks it")) << r.err;
}

TEST(OldKernel, WhatOnlyPrintsStillWorks) {
  EXPECT_EQ(as_old_kernel("5.2", {"--version"}).status.code, 0);
  auto r = as_old_kernel("5.2", {"completion", "bash"});
  EXPECT_EQ(r.status.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "complete -o filenames -F _clutch clutch")) << r.out;
}

}  // namespace
