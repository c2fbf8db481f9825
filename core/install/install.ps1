# Server Manager agent installer for Windows, rendered by the core for one request: the core's address,
# its certificate pin and the SHA-256 of the agent package are written in below, so what this script
# downloads is checked against nothing but what the core already said.
#
# It downloads the agent package from the core, checks its SHA-256, installs it into a venv under
# %ProgramFiles%\ServerManager\agent, writes %ProgramData%\ServerManager\agent.toml, then
# `servermanager agent install-service` enrolls the agent and installs it as a Windows service.
# Run it in an elevated Windows PowerShell, as the core's "Add server" line does; saved to a file,
# set $env:SM_AGENT_ENROLL_TOKEN first.
$ErrorActionPreference = 'Stop'

$CoreUrl = @CORE_URL@
$CorePin = @CORE_PIN@
$CertSha256 = @CERT_SHA256@
$Package = @PACKAGE@
$PackageSha256 = @PACKAGE_SHA256@
$Version = @VERSION@
$Token = @TOKEN@

function Fail([string] $message) {
    Write-Host "servermanager install: $message" -ForegroundColor Red
    throw $message
}

if (-not $Token) { $Token = $env:SM_AGENT_ENROLL_TOKEN }
if (-not $Token) { Fail 'no enrollment token: fetch this script with one, or set $env:SM_AGENT_ENROLL_TOKEN' }

$identity = [Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
if (-not $identity.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    Fail 'run this in an elevated PowerShell (Run as administrator)'
}

[Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12
if ($CertSha256) {
    # The core's certificate is self-signed: its pin is the check, in place of a CA.
    [Net.ServicePointManager]::ServerCertificateValidationCallback = {
        param($request, $certificate, $chain, $errors)
        $digest = [Security.Cryptography.SHA256]::Create().ComputeHash($certificate.GetRawCertData())
        (-join ($digest | ForEach-Object { $_.ToString('x2') })) -eq $CertSha256
    }
}

function Find-Python {
    foreach ($name in 'py', 'python', 'python3') {
        $command = Get-Command $name -ErrorAction SilentlyContinue
        if (-not $command) { continue }
        $pyArgs = @()
        if ($name -eq 'py') { $pyArgs = @('-3') }
        $found = & $command.Source @pyArgs -c "import sys; print(sys.executable if sys.version_info >= (3, 11) else '')" 2>$null
        if ($LASTEXITCODE -eq 0 -and $found) { return "$found".Trim() }
    }
    Fail 'Python 3.11 or newer is needed: winget install Python.Python.3.12, then open a new PowerShell'
}

function Invoke-Checked([string] $what, [scriptblock] $block) {
    & $block
    if ($LASTEXITCODE -ne 0) { Fail "$what failed (exit $LASTEXITCODE)" }
}

$python = Find-Python
$venv = Join-Path $env:ProgramFiles 'ServerManager\agent'
$etc = Join-Path $env:ProgramData 'ServerManager'
$state = Join-Path $etc 'agent'
$conf = Join-Path $etc 'agent.toml'
$tmp = Join-Path ([IO.Path]::GetTempPath()) ('servermanager-' + [Guid]::NewGuid())
New-Item -ItemType Directory -Force -Path $tmp, $etc | Out-Null

try {
    Write-Host "downloading $Package from $CoreUrl"
    $wheel = Join-Path $tmp $Package
    $client = New-Object Net.WebClient
    $client.Headers.Add('Authorization', "Bearer $Token")
    $client.DownloadFile("$CoreUrl/api/v1/agent/package", $wheel)
    $got = (Get-FileHash -Algorithm SHA256 -Path $wheel).Hash.ToLower()
    if ($got -ne $PackageSha256) {
        Fail "the package's SHA-256 is $got, not $PackageSha256 as the core said: not installing it"
    }

    Write-Host "installing into $venv"
    $venvPython = Join-Path $venv 'Scripts\python.exe'
    if (-not (Test-Path $venvPython)) { Invoke-Checked 'creating the venv' { & $python -m venv $venv } }
    Invoke-Checked 'pip install' { & $venvPython -m pip install --disable-pip-version-check --quiet --upgrade ($wheel + '[agent]') }
    Invoke-Checked 'pip install' { & $venvPython -m pip install --disable-pip-version-check --quiet --no-deps --force-reinstall $wheel }

    $lines = @("# Written by the Server Manager agent installer from $CoreUrl.", "core = `"$CoreUrl`"")
    if ($CorePin) { $lines += "core_fingerprint = `"$CorePin`"" }
    if (Test-Path $conf) {
        $backup = "$conf.before-" + (Get-Date -Format 'yyyyMMddHHmmss')
        Copy-Item $conf $backup
        Write-Host "replaced $conf; the old one is $backup"
    }
    [IO.File]::WriteAllLines($conf, $lines)

    # The credential lives here: SYSTEM (the service) and Administrators only.
    New-Item -ItemType Directory -Force -Path $state | Out-Null
    Invoke-Checked 'icacls' { icacls $state /inheritance:r /grant:r '*S-1-5-18:(OI)(CI)F' '*S-1-5-32-544:(OI)(CI)F' | Out-Null }

    # install-service enrolls first (waiting for the core's welcome) when it is given a token, then
    # registers the Windows service with the same settings.
    $exe = Join-Path $venv 'Scripts\servermanager.exe'
    $credential = Join-Path $state 'credential'
    if (Test-Path $credential) {
        Write-Host "already enrolled (kept $credential; delete it to enroll anew)"
    } else {
        $env:SM_AGENT_ENROLL_TOKEN = $Token
    }
    try {
        Invoke-Checked 'installing the service' { & $exe agent install-service --config $conf --state-dir $state }
    } finally {
        Remove-Item Env:SM_AGENT_ENROLL_TOKEN -ErrorAction SilentlyContinue
    }
    Write-Host "the agent $Version runs as a Windows service and is enrolled with $CoreUrl; settings: $conf"
} finally {
    Remove-Item -Recurse -Force -Path $tmp -ErrorAction SilentlyContinue
}
