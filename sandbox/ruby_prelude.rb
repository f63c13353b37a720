# codeexec's Ruby prelude, loaded first (`ruby --disable-gems -r<this file>`).
#
# RubyGems' start-up (loading itself and every default gem's specification) is most of a Ruby hello
# world: about 35 ms against 14 ms without it. Programs keep what RubyGems would have given them:
#   - every bundled gem (matrix, prime, minitest, test-unit, rexml, rake, ...) is requirable: the
#     newest installed version's lib directory (and compiled extensions) goes on $LOAD_PATH;
#   - did_you_mean and error_highlight are loaded, so error messages read the same;
#   - RubyGems itself loads on first use: the constant Gem (autoload), Kernel#gem, or a require of a
#     rubygems/ file or of bundler, rbs or typeprof, which need it.
# And $stdout is unbuffered, as Python's is in the sandbox: output streams live, keeps its order with
# stderr, and survives a kill (timeout, memory) instead of dying in a buffer.
$stdout.sync = true
autoload :Gem, "rubygems"

module Kernel
  private

  def gem(*args, **kwargs)
    ::Gem # loads RubyGems, whose Kernel#gem replaces this one
    gem(*args, **kwargs)
  end
end

module CodeexecGemsOnDemand
  NEEDS_RUBYGEMS = %r{\A(?:rubygems/|(?:bundler|rbs|typeprof)(?:/|\z))}

  private

  def require(path)
    ::Gem if path.is_a?(String) && NEEDS_RUBYGEMS.match?(path)
    super
  end
end
Kernel.prepend(CodeexecGemsOnDemand)

newest = {}
specs = ["/usr/lib/ruby/gems/*/specifications/*.gemspec", "/usr/share/rubygems-integration/*/specifications/*.gemspec",
         "/var/lib/gems/*/specifications/*.gemspec"]
Dir.glob(specs) do |spec|
  home, _, full = spec.delete_suffix(".gemspec").rpartition("/specifications/")
  name, _, version = full.rpartition("-")
  key = version.split(".").map(&:to_i)
  newest[name] = [key, home, full] unless newest[name] && (newest[name][0] <=> key) >= 0
end
extensions = Dir.glob(["/usr/lib/ruby/gems/*/extensions/*/*/*", "/var/lib/gems/*/extensions/*/*/*"])
newest.each_value do |_, home, full|
  $LOAD_PATH << "#{home}/gems/#{full}/lib"
  extensions.each { |dir| $LOAD_PATH << dir if dir.start_with?("#{home}/extensions/") && dir.end_with?("/#{full}") }
end

begin
  require "error_highlight"
  require "did_you_mean"
rescue LoadError
  nil
end
