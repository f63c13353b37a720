"""Ruby runs with --disable-gems and codeexec's prelude (sandbox/ruby_prelude.rb): RubyGems' start-up is
skipped, yet every standard library and bundled gem stays requirable and RubyGems loads on first use.
Checked inside real sandboxes, on every backend, against the interpreter's own installed gems."""

from __future__ import annotations

import json

from sandbox import Status

# Each installed gem (default, bundled, Debian's rubygems-integration) by the feature that loads it.
# Libraries that need RubyGems go last, so everything before them must load without it.
REQUIRE_ALL = r"""
require "json"
SPECIAL = { "english" => "English", "readline-ext" => "readline", "racc" => "racc/parser",
            "debug" => "debug/session", "rinda" => "rinda/rinda" }
NOT_LIBRARIES = %w[rubygems-update]
NEEDS_RUBYGEMS = %w[bundler rbs typeprof]
specs = Dir.glob(["/usr/lib/ruby/gems/*/specifications/{,default/}*.gemspec",
                  "/usr/share/rubygems-integration/*/specifications/*.gemspec"])
names = specs.map { |s| File.basename(s, ".gemspec").rpartition("-").first }.uniq.sort - NOT_LIBRARIES
ordered = (names - NEEDS_RUBYGEMS) + (names & NEEDS_RUBYGEMS)
rubygems_before = nil
failed = {}
ordered.each do |name|
  rubygems_before = $LOADED_FEATURES.any? { |f| f.end_with?("/rubygems.rb") } if name == (names & NEEDS_RUBYGEMS).first
  feature = SPECIAL[name] || (File.exist?("/usr/lib/ruby/3.1.0/#{name}.rb") ? name : name.tr("-", "/"))
  begin
    require feature
  rescue LoadError => e
    failed[name] = e.message
  end
end
puts JSON.generate(names: names, failed: failed, rubygems_before_needed: rubygems_before,
                   rubygems_after: $LOADED_FEATURES.any? { |f| f.end_with?("/rubygems.rb") })
"""


def _ok(result) -> None:
    assert result.status == Status.SUCCEEDED, (result.status, result.error, result.stderr[-2000:])


def test_every_standard_library_and_bundled_gem_is_requirable(run) -> None:
    result = run("ruby", REQUIRE_ALL, timeout_ms=30_000, cpu_ms=30_000, memory_mb=512)
    _ok(result)
    report = json.loads(result.stdout)
    names = set(report["names"])
    assert len(names) >= 80, sorted(names)  # the enumeration really found the installation
    assert {"matrix", "prime", "minitest", "test-unit", "rexml", "rake", "csv", "json", "bundler"} <= names
    assert report["failed"] == {}
    assert report["rubygems_before_needed"] is False  # all but three loaded without RubyGems
    assert report["rubygems_after"] is True  # bundler, rbs and typeprof brought it in on demand


def test_hello_world_does_not_load_rubygems(run) -> None:
    result = run("ruby", 'puts $LOADED_FEATURES.count { |f| f.end_with?("/rubygems.rb") }\nputs Gem.class\n')
    _ok(result)
    # Not loaded at start-up; the first mention of Gem loads it.
    assert result.stdout == "0\nModule\n"


def test_rubygems_api_and_kernel_gem_work_on_demand(run) -> None:
    code = (
        'gem "minitest"\n'
        "require 'minitest'\n"
        'puts Gem::Version.new("1.10") > Gem::Version.new("1.9")\n'
        'puts Gem.loaded_specs.key?("minitest")\n'
        "puts Minitest::VERSION.split('.').size\n"
    )
    result = run("ruby", code)
    _ok(result)
    assert result.stdout == "true\ntrue\n3\n"


def test_error_messages_keep_did_you_mean_and_error_highlight(run) -> None:
    result = run("ruby", "values = [1, 2]\nvalues.frist\n")
    assert result.status == Status.FAILED
    assert "undefined method `frist'" in result.stderr
    assert "Did you mean?  first" in result.stderr  # did_you_mean
    assert "^^^^^^" in result.stderr  # error_highlight underlines the call
    assert "codeexec-ruby-prelude" not in result.stderr  # the prelude is not in the backtrace
