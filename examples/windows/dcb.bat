@echo off
rem dcb.bat: the verbs of the old start_incremental_backup.bat, for dcb.
rem
rem   dcb.bat start    [ARGS]   dcb serve: the service, in this window (Ctrl-C stops it)
rem   dcb.bat once     [ARGS]   dcb run --all: every enabled policy once, now
rem   dcb.bat status   [ARGS]   dcb status: how the backups stand
rem   dcb.bat stop     [ARGS]   dcb stop: stop the running service gracefully
rem   dcb.bat config   [ARGS]   dcb config: the effective configuration, secrets hidden
rem
rem ARGS go to dcb after its command, e.g. `dcb.bat status --json` or
rem `dcb.bat once --backup-root D:\incrementalBackups`. The exit code is dcb's.
rem
rem Keep this file beside dcb.exe (or put dcb.exe on PATH), with dcb.yaml and the
rem policies\ folder beside it: dcb runs in this file's folder, so it finds them
rem wherever the batch file is started from. To run the service at boot rather than
rem in a window, see windows-service.md (NSSM or WinSW run `dcb.exe serve`).

setlocal EnableExtensions DisableDelayedExpansion

rem Taken before SHIFT moves %0.
set "DCBBAT_HOME=%~dp0"
set "DCBBAT_SELF=%~nx0"

rem dcb.exe beside this file, else the first one on PATH.
set "DCBBAT_EXE=%DCBBAT_HOME%dcb.exe"
if not exist "%DCBBAT_EXE%" set "DCBBAT_EXE="
if not defined DCBBAT_EXE for %%I in (dcb.exe) do set "DCBBAT_EXE=%%~$PATH:I"
if not defined DCBBAT_EXE goto noexe

set "DCBBAT_VERB=%~1"
if /i "%DCBBAT_VERB%"=="start" (set "DCBBAT_COMMAND=serve" & goto args)
if /i "%DCBBAT_VERB%"=="once" (set "DCBBAT_COMMAND=run --all" & goto args)
if /i "%DCBBAT_VERB%"=="status" (set "DCBBAT_COMMAND=status" & goto args)
if /i "%DCBBAT_VERB%"=="stop" (set "DCBBAT_COMMAND=stop" & goto args)
if /i "%DCBBAT_VERB%"=="config" (set "DCBBAT_COMMAND=config" & goto args)
if /i "%DCBBAT_VERB%"=="help" goto help
if "%DCBBAT_VERB%"=="/?" goto help
if /i "%DCBBAT_VERB%"=="-h" goto help
if /i "%DCBBAT_VERB%"=="--help" goto help
call :usage 1>&2
exit /b 2

:help
call :usage
exit /b 0

:args
rem Everything after the verb, as given (quotes kept).
set "DCBBAT_ARGS="
:next
shift
if "%~1"=="" goto run
set DCBBAT_ARGS=%DCBBAT_ARGS% %1
goto next

:run
pushd "%DCBBAT_HOME%"
"%DCBBAT_EXE%" %DCBBAT_COMMAND%%DCBBAT_ARGS%
set "DCBBAT_EXIT=%ERRORLEVEL%"
popd
exit /b %DCBBAT_EXIT%

:noexe
echo %DCBBAT_SELF%: dcb.exe is neither in %DCBBAT_HOME% nor on PATH 1>&2
exit /b 9009

:usage
echo usage: %DCBBAT_SELF% start^|once^|status^|stop^|config [ARGS...]
echo.
echo   start    run the service in this window (dcb serve); Ctrl-C stops it
echo   once     run every enabled policy once, now (dcb run --all)
echo   status   show how the backups stand (dcb status)
echo   stop     stop the running service gracefully (dcb stop)
echo   config   show the effective configuration, secrets hidden (dcb config)
echo.
echo ARGS go to dcb after its command, e.g. "%DCBBAT_SELF% status --json".
echo dcb runs in %DCBBAT_HOME%, where dcb.yaml and policies\ are looked for.
exit /b 0
