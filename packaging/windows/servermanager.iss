; Inno Setup script of the desktop app's Windows installer: Start-menu entry, optional desktop
; icon, and an uninstaller (Settings > Apps). Built by .github/workflows/release.yml:
;   iscc /DAppVersion=0.1.0 /DSourceDir=<repo>\dist\servermanager-desktop /O<repo>\dist servermanager.iss
; SourceDir is the PyInstaller one-folder bundle (python packaging/desktop_bundle.py).

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef SourceDir
  #define SourceDir "..\..\dist\servermanager-desktop"
#endif
#define AppExe "servermanager-desktop.exe"

[Setup]
; The AppId ties upgrades and the uninstaller to this app: never change it.
AppId={{6F0C2E4B-8D3A-4C8E-9B1F-5A7D2E3C4B10}
AppName=Server Manager
AppVersion={#AppVersion}
AppPublisher=Server Manager
DefaultDirName={autopf}\Server Manager
DefaultGroupName=Server Manager
DisableProgramGroupPage=yes
; Per-user install without elevation by default; the dialog offers all users (elevated).
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputBaseFilename=ServerManager-{#AppVersion}-windows-x64-setup
Compression=lzma2
SolidCompression=yes
WizardStyle=modern
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName=Server Manager

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\Server Manager"; Filename: "{app}\{#AppExe}"
Name: "{group}\Uninstall Server Manager"; Filename: "{uninstallexe}"
Name: "{autodesktop}\Server Manager"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,Server Manager}"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Left by an older version's files that this one no longer ships.
Type: filesandordirs; Name: "{app}\_internal"
